#!/usr/bin/env python3
"""Vector search throughput and recall: Marquee's in-process search against faiss-cpu
(exact) and hnswlib (HNSW), on the same data, in the same run, reported as ratios.

    python3 benchmarks/search_bench.py [--n 100000] [--queries 1000] [--dim 384]
                                       [--threads T] [--skip-marquee]

Needs: `pip install faiss-cpu hnswlib` (or `chroma-hnswlib`, same `hnswlib` API) and, for
the Marquee side, `cargo build --release -p marquee-bench` (the `search` subcommand of
target/release/marquee-bench). Without a working binary the peer figures still print.

What it does
------------
1. Data. Clustered, not uniform (uniform random vectors say nothing about HNSW): --clusters
   centres ~ N(0, 1) in R^dim; each corpus point and each query is a uniformly chosen
   centre + 0.35 * N(0, 1) noise, then L2-normalised. Fixed --seed, float32. Written to
   --workdir as raw little-endian float32 `corpus.f32` (n x dim, row-major) and
   `queries.f32` (queries x dim), plus `meta.json` {n, queries, dim}.
2. Ground truth. Exact top-10 by inner product (faiss IndexFlatIP), written as
   `gt.i32`: queries x 10 little-endian int32 corpus ids, row-major. Recall@10 of every
   approximate run (both sides) is |returned top-10 ∩ true top-10| / 10, averaged.
3. faiss exact (IndexFlatIP, omp threads = --threads):
   - single: the first --single-queries queries searched one at a time (batch of 1);
   - batch:  all queries in one call (batch of --queries, 1,000 by default), best of 3;
   each timed with --threads and with 1 OpenMP thread, the better one reported (on a
   small busy machine faiss at batch 1 runs ~4x slower with 2 threads than with 1).
4. hnswlib (space 'ip', --m, --ef-construction; built with --threads threads). For each
   ef in --ef-search: single-thread, one query per knn_query call over all queries
   (queries/s and recall@10), and one batched knn_query over all queries with --threads
   threads (queries/s).
5. Marquee: `marquee-bench search --dir WORKDIR --k 10 --index exact --single S` (and
   again with `--f16-shortlist false`, the f32-only scan, for comparison) and
   `... --index hnsw --m M --ef-construction EFC --ef-search 10,16,...`; the last stdout
   line of each is JSON ({"exact": {single_qps, batch_qps, build_s}} and
   {"hnsw": {build_s, curve: [{ef, single_qps, recall_at_10}, ...]}}). The Rust side
   computes its own recall against gt.i32. Marquee runs after the peers, never at the
   same time, so each side has every core.

Reading the output
------------------
A Markdown report on stdout (progress goes to stderr):
- a machine line (date, CPU model, cores, library versions);
- exact search: faiss vs Marquee queries/s at batch 1 and batch 1,000, ratio
  Marquee/faiss. Target: >= 1.0x at both batch sizes;
- HNSW: per ef, recall@10 and single-thread queries/s for hnswlib and Marquee, and the
  qps ratio Marquee/hnswlib at the same ef. Equal ef does not mean equal recall, so the
  line that decides the target is the one below the table: each system at the lowest ef
  where its own recall@10 >= 0.95, ratio of their single-thread queries/s. Target:
  Marquee >= 0.8x hnswlib ("within 0.8x");
- the raw numbers as one JSON object at the end (a ```json block).

Caveats: the peer single-query numbers include Python call overhead (a few microseconds
per call), which favours Marquee slightly at low ef / small corpora. On a shared machine
speeds drift between minutes; rerun before trusting a ratio near a target.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, "target", "release", "marquee-bench")
K = 10
RECALL_TARGET = 0.95


def log(msg: str) -> None:
    print(f"[search_bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Data


def make_data(n: int, q: int, dim: int, clusters: int, seed: int,
              noise: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, dim), dtype=np.float32)
        chunk = 20_000
        for s in range(0, count, chunk):
            e = min(count, s + chunk)
            labels = rng.integers(0, clusters, size=e - s)
            x = centres[labels] + np.float32(noise) * rng.standard_normal(
                (e - s, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[s:e] = x
        return out

    corpus = draw(n)
    queries = draw(q)
    return corpus, queries


def write_data(workdir: str, corpus: np.ndarray, queries: np.ndarray) -> None:
    os.makedirs(workdir, exist_ok=True)
    corpus.astype("<f4", copy=False).tofile(os.path.join(workdir, "corpus.f32"))
    queries.astype("<f4", copy=False).tofile(os.path.join(workdir, "queries.f32"))
    with open(os.path.join(workdir, "meta.json"), "w") as f:
        json.dump({"n": int(corpus.shape[0]), "queries": int(queries.shape[0]),
                   "dim": int(corpus.shape[1])}, f)
        f.write("\n")


def recall_at_k(found: np.ndarray, gt: np.ndarray) -> float:
    hits = 0
    for row, truth in zip(found, gt):
        hits += len(np.intersect1d(row[:K], truth[:K], assume_unique=False))
    return hits / (gt.shape[0] * K)


# ---------------------------------------------------------------------------------------
# Peers


def faiss_exact(faiss, corpus: np.ndarray, queries: np.ndarray, threads: int,
                single_queries: int) -> tuple[dict, np.ndarray]:
    """faiss IndexFlatIP queries/s, single and batched. Each is timed with --threads OpenMP
    threads and with 1 thread, and the better is reported (faiss's best configuration):
    on a small, busy machine OpenMP at batch 1 can be several times slower than 1 thread,
    which would make faiss an unfairly weak baseline. Both figures are kept in the JSON."""
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    build_s = time.perf_counter() - t0

    # Ground truth (also a warm-up).
    _, gt = index.search(queries, K)
    gt = gt.astype(np.int32)

    m = min(single_queries, queries.shape[0])
    single_by_threads: dict[str, float] = {}
    batch_by_threads: dict[str, float] = {}
    for t in sorted({threads, 1}, reverse=True):
        faiss.omp_set_num_threads(t)
        index.search(queries[:1], K)  # warm-up
        t0 = time.perf_counter()
        for i in range(m):
            index.search(queries[i:i + 1], K)
        single_by_threads[str(t)] = m / (time.perf_counter() - t0)

        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            index.search(queries, K)
            best = max(best, queries.shape[0] / (time.perf_counter() - t0))
        batch_by_threads[str(t)] = best
    faiss.omp_set_num_threads(threads)
    single_t = max(single_by_threads, key=single_by_threads.get)
    batch_t = max(batch_by_threads, key=batch_by_threads.get)
    return {"single_qps": single_by_threads[single_t], "single_threads": int(single_t),
            "single_queries": m, "batch_qps": batch_by_threads[batch_t],
            "batch_threads": int(batch_t), "batch_size": int(queries.shape[0]),
            "single_qps_by_threads": single_by_threads,
            "batch_qps_by_threads": batch_by_threads,
            "build_s": build_s, "threads": threads}, gt


def hnswlib_curve(hnswlib, corpus: np.ndarray, queries: np.ndarray, gt: np.ndarray,
                  threads: int, m: int, ef_construction: int, efs: list[int],
                  seed: int) -> dict:
    n, dim = corpus.shape
    index = hnswlib.Index(space="ip", dim=dim)
    t0 = time.perf_counter()
    index.init_index(max_elements=n, M=m, ef_construction=ef_construction,
                     random_seed=seed)
    index.set_num_threads(threads)
    index.add_items(corpus, np.arange(n), num_threads=threads)
    build_s = time.perf_counter() - t0
    log(f"hnswlib build: {build_s:.1f}s")

    curve = []
    for ef in efs:
        index.set_ef(ef)
        # Single query, single thread.
        index.set_num_threads(1)
        index.knn_query(queries[:1], k=K, num_threads=1)  # warm-up
        found = np.empty((queries.shape[0], K), dtype=np.int64)
        t0 = time.perf_counter()
        for i in range(queries.shape[0]):
            labels, _ = index.knn_query(queries[i:i + 1], k=K, num_threads=1)
            found[i] = labels[0]
        single_qps = queries.shape[0] / (time.perf_counter() - t0)
        recall = recall_at_k(found, gt)
        # One batched call, all threads.
        index.set_num_threads(threads)
        t0 = time.perf_counter()
        blabels, _ = index.knn_query(queries, k=K, num_threads=threads)
        batch_qps = queries.shape[0] / (time.perf_counter() - t0)
        batch_recall = recall_at_k(blabels, gt)
        log(f"hnswlib ef={ef}: recall@10={recall:.4f} single={single_qps:.0f} q/s "
            f"batch={batch_qps:.0f} q/s")
        curve.append({"ef": ef, "single_qps": single_qps, "recall_at_10": recall,
                      "batch_qps": batch_qps, "batch_recall_at_10": batch_recall})
    return {"build_s": build_s, "m": m, "ef_construction": ef_construction,
            "threads": threads, "curve": curve}


# ---------------------------------------------------------------------------------------
# Marquee


def run_marquee(binary: str, args: list[str], timeout: float) -> dict:
    cmd = [binary, "search"] + args
    log("running " + " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        tail = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines()
                if ln.strip()][-3:]
        raise RuntimeError(f"exit status {proc.returncode}: " + " | ".join(tail))
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    if not lines:
        raise RuntimeError("no output")
    return json.loads(lines[-1])


def marquee(binary: str, workdir: str, m: int, ef_construction: int, efs: list[int],
            single_queries: int, timeout: float) -> tuple[dict, list[str]]:
    """Returns ({"exact": ..., "hnsw": ...} with whatever succeeded, [error messages])."""
    result: dict = {}
    errors: list[str] = []
    if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
        return result, [f"binary not found: {binary} (cargo build --release -p marquee-bench)"]
    exact = ["--dir", workdir, "--k", str(K), "--index", "exact", "--single", str(single_queries)]
    runs = [  # (result name, key of the binary's JSON, arguments)
        ("exact", "exact", exact),
        ("exact_f32", "exact", exact + ["--f16-shortlist", "false"]),
        ("hnsw", "hnsw", ["--dir", workdir, "--k", str(K), "--index", "hnsw", "--m", str(m),
                          "--ef-construction", str(ef_construction),
                          "--ef-search", ",".join(str(e) for e in efs)]),
    ]
    for name, key, args in runs:
        try:
            out = run_marquee(binary, args, timeout)
            if key not in out:
                raise RuntimeError(f"JSON has no '{key}' key: {json.dumps(out)[:200]}")
            result[name] = out[key]
        except Exception as exc:  # noqa: BLE001 - report and keep going
            errors.append(f"marquee-bench search {' '.join(args[4:])} failed: {exc}")
            log(errors[-1])
    return result, errors


# ---------------------------------------------------------------------------------------
# Report


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fmt_qps(x) -> str:
    return "—" if x is None else f"{x:,.0f}"


def fmt_ratio(a, b) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}x"


def fmt_recall(x) -> str:
    return "—" if x is None else f"{x:.4f}"


def lowest_ef_at(curve: list[dict], target: float):
    for point in sorted(curve, key=lambda p: p["ef"]):
        if point.get("recall_at_10", 0.0) >= target:
            return point
    return None


def report(raw: dict, marquee_errors: list[str]) -> str:
    cfg = raw["config"]
    fx, hx = raw["faiss_exact"], raw["hnswlib"]
    mq = raw.get("marquee", {})
    mx, mh = mq.get("exact"), mq.get("hnsw")
    lines = []
    lines.append(f"# Vector search: Marquee vs faiss-cpu / hnswlib\n")
    m = raw["machine"]
    lines.append(f"Machine: {m['date']}, {m['cpu']}, {m['cores']} cores, "
                 f"threads={cfg['threads']}; Python {m['python']}, numpy {m['numpy']}, "
                 f"faiss {m['faiss']}, {m['hnswlib_package']} {m['hnswlib']}.\n")
    lines.append(f"Data: n={cfg['n']:,} corpus, {cfg['queries']:,} queries, d={cfg['dim']}, "
                 f"{cfg['clusters']:,} clusters (noise 0.35, L2-normalised), seed "
                 f"{cfg['seed']}; k={K}, inner product.\n")
    if marquee_errors:
        lines.append("**Marquee side unavailable:** " + "; ".join(marquee_errors) + "\n")

    lines.append("## Exact search (target: Marquee >= 1.0x faiss at both batch sizes)\n")
    lines.append("| batch | faiss IndexFlatIP q/s | Marquee q/s | Marquee/faiss |")
    lines.append("|---|---:|---:|---:|")
    ms = mx.get("single_qps") if mx else None
    mb = mx.get("batch_qps") if mx else None
    lines.append(f"| 1 (first {fx['single_queries']} queries, one per call; faiss "
                 f"{fx['single_threads']} thr) | "
                 f"{fmt_qps(fx['single_qps'])} | {fmt_qps(ms)} | "
                 f"{fmt_ratio(ms, fx['single_qps'])} |")
    lines.append(f"| {fx['batch_size']:,} (best of 3; faiss {fx['batch_threads']} thr) | "
                 f"{fmt_qps(fx['batch_qps'])} | "
                 f"{fmt_qps(mb)} | {fmt_ratio(mb, fx['batch_qps'])} |")
    m32 = mq.get("exact_f32")
    if m32:
        lines.append(f"| 1, f32 rows only (`--f16-shortlist false`) | "
                     f"{fmt_qps(fx['single_qps'])} | {fmt_qps(m32.get('single_qps'))} | "
                     f"{fmt_ratio(m32.get('single_qps'), fx['single_qps'])} |")
    lines.append("")
    lines.append("Marquee's exact index scans an f16 copy of the rows for up to 8 queries and "
                 "rescores, in f32, every row whose error-bounded score can still rank "
                 "(results equal an f32 scan's); batches scan the f32 rows. Its HNSW walks "
                 "read the f16 rows too and score the rows found in f32.\n")

    lines.append(f"## HNSW (M={hx['m']}, ef_construction={hx['ef_construction']}; "
                 f"target: Marquee >= 0.8x hnswlib q/s at recall@10 >= {RECALL_TARGET})\n")
    mb_s = mh.get("build_s") if mh else None
    lines.append(f"Build: hnswlib {hx['build_s']:.1f}s ({hx['threads']} thread(s))"
                 + (f", Marquee {mb_s:.1f}s" if mb_s is not None else "") + ".\n")
    lines.append("| ef | hnswlib recall@10 | hnswlib q/s (1 thread) | hnswlib batch q/s "
                 f"({hx['threads']} thr) | Marquee recall@10 | Marquee q/s | "
                 "Marquee/hnswlib q/s |")
    lines.append("|---:|---:|---:|---:|---:|---:|---:|")
    mcurve = {p["ef"]: p for p in (mh.get("curve", []) if mh else [])}
    for p in hx["curve"]:
        mp = mcurve.get(p["ef"], {})
        lines.append(f"| {p['ef']} | {fmt_recall(p['recall_at_10'])} | "
                     f"{fmt_qps(p['single_qps'])} | {fmt_qps(p['batch_qps'])} | "
                     f"{fmt_recall(mp.get('recall_at_10'))} | "
                     f"{fmt_qps(mp.get('single_qps'))} | "
                     f"{fmt_ratio(mp.get('single_qps'), p['single_qps'])} |")
    lines.append("")

    hp = lowest_ef_at(hx["curve"], RECALL_TARGET)
    mp = lowest_ef_at(mh.get("curve", []), RECALL_TARGET) if mh else None
    if hp is None:
        verdict = f"hnswlib never reaches recall@10 >= {RECALL_TARGET} on this ef grid"
    elif mh is None:
        verdict = (f"hnswlib reaches recall@10 >= {RECALL_TARGET} at ef={hp['ef']} "
                   f"({fmt_recall(hp['recall_at_10'])}, {fmt_qps(hp['single_qps'])} q/s); "
                   "no Marquee figures")
    elif mp is None:
        verdict = (f"hnswlib reaches recall@10 >= {RECALL_TARGET} at ef={hp['ef']} "
                   f"({fmt_qps(hp['single_qps'])} q/s); Marquee never does on this ef "
                   "grid: target missed")
    else:
        ratio = mp["single_qps"] / hp["single_qps"]
        verdict = (f"hnswlib ef={hp['ef']} "
                   f"({fmt_recall(hp['recall_at_10'])}, {fmt_qps(hp['single_qps'])} q/s), "
                   f"Marquee ef={mp['ef']} ({fmt_recall(mp['recall_at_10'])}, "
                   f"{fmt_qps(mp['single_qps'])} q/s): Marquee/hnswlib = **{ratio:.2f}x** "
                   f"(target >= 0.8x: {'met' if ratio >= 0.8 else 'missed'})")
    lines.append(f"At the lowest ef with recall@10 >= {RECALL_TARGET}: {verdict}.\n")
    if mx:
        ok = [r for r in (ms, mb) if r is not None]
        if len(ok) == 2:
            single_ok = ms / fx["single_qps"] >= 1.0
            batch_ok = mb / fx["batch_qps"] >= 1.0
            lines.append(f"Exact: Marquee/faiss = {ms / fx['single_qps']:.2f}x (batch 1), "
                         f"{mb / fx['batch_qps']:.2f}x (batch {fx['batch_size']:,}) "
                         f"(target >= 1.0x at both: "
                         f"{'met' if single_ok and batch_ok else 'missed'}).\n")

    lines.append("## Raw numbers\n")
    lines.append("```json")
    lines.append(json.dumps(raw, indent=1))
    lines.append("```")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="corpus vectors")
    ap.add_argument("--queries", type=int, default=1_000, help="query vectors")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clusters", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for faiss, hnswlib build and hnswlib batch queries")
    ap.add_argument("--single-queries", type=int, default=200,
                    help="faiss exact: how many queries to time one at a time")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef-search", default="10,16,32,64,128,256",
                    help="comma-separated ef values")
    ap.add_argument("--workdir", default="/tmp/marquee-search-bench")
    ap.add_argument("--marquee-bin", default=DEFAULT_BIN)
    ap.add_argument("--marquee-timeout", type=float, default=3600.0,
                    help="seconds per marquee-bench run")
    ap.add_argument("--skip-marquee", action="store_true",
                    help="peers only; do not run marquee-bench")
    ap.add_argument("--json-out", default=None, help="also write the raw JSON here")
    args = ap.parse_args()
    efs = [int(e) for e in args.ef_search.split(",") if e.strip()]

    import faiss  # noqa: PLC0415 - imported late so --help works without it
    import hnswlib  # noqa: PLC0415
    from importlib.metadata import version  # noqa: PLC0415
    hnsw_pkg, hnsw_ver = "hnswlib", getattr(hnswlib, "__version__", None)
    for pkg in ("hnswlib", "chroma-hnswlib"):
        try:
            hnsw_ver = version(pkg)
            hnsw_pkg = pkg
            break
        except Exception:  # noqa: BLE001
            continue

    log(f"generating data n={args.n} queries={args.queries} dim={args.dim} "
        f"clusters={args.clusters} seed={args.seed}")
    corpus, queries = make_data(args.n, args.queries, args.dim, args.clusters, args.seed)
    write_data(args.workdir, corpus, queries)

    log(f"faiss exact ({args.threads} threads)")
    fx, gt = faiss_exact(faiss, corpus, queries, args.threads, args.single_queries)
    gt.astype("<i4", copy=False).tofile(os.path.join(args.workdir, "gt.i32"))
    log(f"faiss exact: single={fx['single_qps_by_threads']} q/s "
        f"batch={fx['batch_qps_by_threads']} q/s (by threads)")

    log(f"hnswlib build (M={args.m}, ef_construction={args.ef_construction}, "
        f"{args.threads} threads)")
    hx = hnswlib_curve(hnswlib, corpus, queries, gt, args.threads, args.m,
                       args.ef_construction, efs, args.seed)
    del corpus, queries

    mq: dict = {}
    errors: list[str] = []
    if args.skip_marquee:
        errors = ["skipped (--skip-marquee)"]
    else:
        mq, errors = marquee(args.marquee_bin, args.workdir, args.m, args.ef_construction,
                             efs, min(args.single_queries, args.queries),
                             args.marquee_timeout)

    raw = {
        "machine": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpu": cpu_model(), "processor": platform.processor(),
            "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "faiss": faiss.__version__, "hnswlib": hnsw_ver,
            "hnswlib_package": hnsw_pkg,
        },
        "config": {"n": args.n, "queries": args.queries, "dim": args.dim,
                   "clusters": args.clusters, "seed": args.seed, "threads": args.threads,
                   "k": K, "m": args.m, "ef_construction": args.ef_construction,
                   "ef_search": efs, "workdir": args.workdir},
        "faiss_exact": fx,
        "hnswlib": hx,
        "marquee": mq,
        "marquee_errors": errors,
    }
    print(report(raw, errors))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(raw, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
