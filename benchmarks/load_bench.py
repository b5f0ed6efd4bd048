#!/usr/bin/env python3
"""Serving under load: Embed and Search against a real server at several concurrency
levels, with the in-process embedding ceiling measured in the same run.

    python3 benchmarks/load_bench.py [--concurrency 1,8,32,128] [--warmup 3] [--duration 15]

Needs: `cargo build --release -p marquee-bench -p marquee-server -p marquee-bert-text
-p marquee-client` done and the model fetched (scripts/fetch-model.sh). Data comes from
`../shared/data` (or MARQUEE_SHARED_DATA) and is never copied into the repository.

What it does, in one run:
1. starts a release `marquee-server` on free ports with a temporary data directory
   (or --data-dir, kept and reused when it already holds the collection);
2. creates the collection `movies` (384 dims, cosine, bound to the model) and ingests
   the shared movies with `marquee ingest` (server-side embedding, ~2 min for 7,290);
3. measures the in-process Embed ceiling (`marquee-bench inprocess-embed`, the plugin
   loaded in-process, batches of the server's max batch size), before and after the
   Embed sweep, to bracket this machine's drift;
4. sweeps Embed alone (one movie document per request) and Search alone (the
   tip-of-the-tongue validation queries, by vector and by text) with
   `marquee-bench load`;
5. writes JSON, CSV and SVG under benchmarks/results/ (load.csv and load.svg combine
   the sweeps) and prints the tables and the three target checks as ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(REPO, "target", "release")
MODEL_DIR = os.path.join(REPO, "data", "models", "all-MiniLM-L6-v2")
MODEL = "all-MiniLM-L6-v2"
PLUGIN = os.path.join(RELEASE, "libmarquee_bert_text.so")
OVERHEAD_BUDGET_US = 100.0


def shared_data() -> str:
    return os.environ.get("MARQUEE_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))


def exe(name: str) -> str:
    return os.path.join(RELEASE, name)


def run(cmd: list[str], capture: bool = True, **kw) -> str:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.PIPE if capture else None
    return subprocess.run(cmd, check=True, stdout=out, text=True, **kw).stdout


def run_json(cmd: list[str]) -> dict:
    return json.loads(run(cmd).strip().splitlines()[-1])


@contextlib.contextmanager
def server(data_dir: str):
    log = open(os.path.join(data_dir, "server.log"), "w")
    proc = subprocess.Popen(
        [exe("marquee-server"), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
         "--data-dir", data_dir, "--model", f"{MODEL}=bert-text:{MODEL_DIR}"],
        stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        addr = next((w.split("=", 1)[1] for w in line.split() if w.startswith("grpc=")), None)
        if addr is None:
            sys.exit(f"the server did not start: {line!r}; see {log.name}")
        yield f"http://{addr}"
    finally:
        proc.terminate()
        proc.wait()
        log.close()


def corpus(path: str, limit: int | None, tmp: str) -> str:
    """The movies file, or its first `limit` records in a temporary copy."""
    if not limit:
        return path
    out = os.path.join(tmp, f"movies-{limit}.jsonl.gz")
    with gzip.open(path, "rt") as src, gzip.open(out, "wt") as dst:
        for i, line in enumerate(src):
            if i >= limit:
                break
            dst.write(line)
    return out


def count_lines(path: str) -> int:
    with gzip.open(path, "rt") as f:
        return sum(1 for line in f if line.strip())


def fill_collection(addr: str, movies: str) -> None:
    cli = [exe("marquee"), "--addr", addr]
    want = count_lines(movies)
    try:
        info = json.loads(run(cli + ["--json", "collections", "get", "movies"], stderr=subprocess.DEVNULL))
        if int(info.get("items", 0)) == want:
            print(f"collection movies already holds {want} items", file=sys.stderr)
            return
        run(cli + ["collections", "delete", "movies"])
    except subprocess.CalledProcessError:
        pass
    run(cli + ["collections", "create", "movies", "--dim", "384", "--metric", "cosine", "--model", MODEL])
    run(cli + ["ingest", "movies", movies, "--id-field", "imdb_id",
               "--template", "{title} ({year}). {overview|plot}", "--payload", "title,year,genres"])


def inprocess(movies: str, args: argparse.Namespace) -> dict:
    return run_json([exe("marquee-bench"), "inprocess-embed", "--plugin", PLUGIN,
                     "--model-dir", MODEL_DIR, "--texts", movies, "--n", str(args.inprocess_n),
                     "--rounds", str(args.inprocess_rounds)])


def sweep(addr: str, name: str, extra: list[str], args: argparse.Namespace) -> dict:
    out = os.path.join(args.out, name)
    run([exe("marquee-bench"), "--addr", addr, "load", *extra,
         "--concurrency", args.concurrency, "--warmup", str(args.warmup),
         "--duration", str(args.duration), "--json", out + ".json", "--csv", out + ".csv"],
        capture=False)
    with open(out + ".json") as f:
        return json.load(f)


def step(report: dict, concurrency: int) -> dict | None:
    return next((s for s in report["steps"] if s.get("concurrency") == concurrency), None)


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    return f"{os.cpu_count()} vCPU {model}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", default="1,8,32,128")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds per step")
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per step")
    p.add_argument("--corpus-limit", type=int, help="ingest and embed only the first N movies")
    p.add_argument("--data-dir", help="server data directory to keep and reuse (default: temporary)")
    p.add_argument("--inprocess-n", type=int, default=512, help="documents per in-process round")
    p.add_argument("--inprocess-rounds", type=int, default=3)
    p.add_argument("--no-text-search", action="store_true", help="skip the Search-by-text sweep")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    args = p.parse_args()

    data = shared_data()
    movies_file = os.path.join(data, "movies.jsonl.gz")
    queries = os.path.join(data, "tot", "reddit_validation.jsonl")
    for path, hint in [(movies_file, "set MARQUEE_SHARED_DATA"), (queries, "set MARQUEE_SHARED_DATA"),
                       (os.path.join(MODEL_DIR, "model.safetensors"), "run scripts/fetch-model.sh")] + [
                       (exe(n), "cargo build --release -p marquee-bench -p marquee-server "
                                "-p marquee-bert-text -p marquee-client")
                       for n in ["marquee-server", "marquee", "marquee-bench", "libmarquee_bert_text.so"]]:
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: {hint}")
    os.makedirs(args.out, exist_ok=True)
    started = datetime.datetime.now()
    load_before = os.getloadavg()

    tmp = tempfile.mkdtemp(prefix="marquee-load-")
    data_dir = args.data_dir or os.path.join(tmp, "data")
    os.makedirs(data_dir, exist_ok=True)
    try:
        movies = corpus(movies_file, args.corpus_limit, tmp)
        n_movies = count_lines(movies)
        with server(data_dir) as addr:
            fill_collection(addr, movies)
            ceiling_before = inprocess(movies, args)
            embed = sweep(addr, "embed", ["--rpc-mix", "embed=1", "--texts", movies, "--label", "embed"], args)
            ceiling_after = inprocess(movies, args)
            search_args = ["--rpc-mix", "search=1", "--collection", "movies", "--queries", queries]
            searches = [sweep(addr, "search-vector", search_args + ["--query-vectors", "--label", "search (vector)"], args)]
            if not args.no_text_search:
                searches.append(sweep(addr, "search-text", search_args + ["--label", "search (text)"], args))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()

    names = ["embed", "search-vector"] + ([] if args.no_text_search else ["search-text"])
    run([exe("marquee-bench"), "plot", *[os.path.join(args.out, n + ".json") for n in names],
         "--out", os.path.join(args.out, "load.svg")])
    with open(os.path.join(args.out, "load.csv"), "w", newline="") as combined:
        writer = None
        for n in names:
            with open(os.path.join(args.out, n + ".csv"), newline="") as f:
                reader = csv.reader(f)
                header = next(reader)
                if writer is None:
                    writer = csv.writer(combined, lineterminator="\n")
                    writer.writerow(header)
                writer.writerows(reader)

    # The report.
    print(f"\nServing under load, {started:%Y-%m-%d %H:%M}, {machine()}; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; {n_movies} movies; "
          f"{args.warmup:g} s warm-up + {args.duration:g} s per step\n")
    print("| RPC | concurrency | throughput, req/s | p50, ms | p99, ms | p99 / p50 | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for report in [embed, *searches]:
        rpc = "embed" if report["label"] == "embed" else "search"
        for s in report["steps"]:
            r = s["rpcs"][rpc]
            l = r["latency_ms"]
            errors = sum(r["errors"].values())
            ratio = l["p99"] / l["p50"] if l["p50"] else float("nan")
            print(f"| {report['label']} | {s['concurrency']} | {r['throughput_rps']:,.1f} | "
                  f"{l['p50']:.2f} | {l['p99']:.2f} | {ratio:.2f} | {errors} |")

    print("\nEmbed, server side (µs): mean (p50 / p99)\n")
    print("| concurrency | queue | tokenize | inference | total | total − queue − tokenize − inference "
          "| total − queue − inference | client − server total |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in embed["steps"]:
        sv = s["rpcs"]["embed"]["server_us"]
        cell = lambda k: f"{sv[k]['mean']:,.0f} ({sv[k]['p50']:,.0f} / {sv[k]['p99']:,.0f})"
        print(f"| {s['concurrency']} | {cell('queue')} | {cell('tokenize')} | {cell('inference')} | "
              f"{cell('total')} | {cell('overhead_total_minus_queue_tokenize_inference')} | "
              f"{cell('overhead_total_minus_queue_inference')} | {cell('client_minus_server_total')} |")

    before, after = ceiling_before["docs_per_s"], ceiling_after["docs_per_s"]
    ceiling = (before + after) / 2
    print(f"\nIn-process ceiling (plugin in-process, batches of 64, {ceiling_before['docs']} docs, median of "
          f"{args.inprocess_rounds} rounds): {before:.1f} docs/s before the Embed sweep, {after:.1f} after; "
          f"mean {ceiling:.1f} docs/s ({ceiling_before['tokens_per_s']:,.0f} / {ceiling_after['tokens_per_s']:,.0f} tokens/s)")

    checks = {}
    print("\nTargets:")
    c32 = step(embed, 32)
    if c32:
        r = c32["rpcs"]["embed"]
        ratio = r["inputs_per_s"] / ceiling
        checks["embed_c32_over_inprocess"] = ratio
        print(f"- Embed at concurrency 32: {r['inputs_per_s']:.1f} docs/s = {ratio:.2f}x the in-process "
              f"ceiling (target >= 0.90): {'met' if ratio >= 0.9 else 'NOT met'}")
    for report in [embed, *searches]:
        rpc = "embed" if report["label"] == "embed" else "search"
        c1 = step(report, 1)
        if c1:
            l = c1["rpcs"][rpc]["latency_ms"]
            ratio = l["p99"] / l["p50"]
            checks[f"{report['label']}_c1_p99_over_p50"] = ratio
            print(f"- {report['label']} at concurrency 1: p99 / p50 = {l['p99']:.2f} / {l['p50']:.2f} ms = "
                  f"{ratio:.2f} (target <= 2): {'met' if ratio <= 2 else 'NOT met'}")
    c1 = step(embed, 1)
    if c1:
        sv = c1["rpcs"]["embed"]["server_us"]
        for key, name in [("overhead_total_minus_queue_inference", "total - queue - inference (the issue's definition)"),
                          ("overhead_total_minus_queue_tokenize_inference", "total - queue - tokenize - inference")]:
            mean, p50 = sv[key]["mean"], sv[key]["p50"]
            checks[key + "_c1_mean_us"] = mean
            checks[key + "_c1_p50_us"] = p50
            verdict = lambda v: "met" if v <= OVERHEAD_BUDGET_US else "NOT met"
            print(f"- server overhead at concurrency 1, {name}: mean {mean:.0f} us = "
                  f"{mean / OVERHEAD_BUDGET_US:.2f}x the 100 us budget ({verdict(mean)}), p50 {p50:.0f} us = "
                  f"{p50 / OVERHEAD_BUDGET_US:.2f}x ({verdict(p50)})")

    summary = {"date": f"{started:%Y-%m-%d %H:%M}", "machine": machine(), "load_average": [load_before, load_after],
               "inprocess": [ceiling_before, ceiling_after], "checks": checks}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"\nwrote {args.out}/load.svg, load.csv, summary.json and per-sweep JSON/CSV")


if __name__ == "__main__":
    main()
