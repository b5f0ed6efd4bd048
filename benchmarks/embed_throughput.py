#!/usr/bin/env python3
"""Embedding throughput and latency: Marquee over gRPC against sentence-transformers
and ONNX Runtime in-process, same model, same documents, same batch size and max length,
in one run.

    python3 benchmarks/embed_throughput.py [--movies PATH] [--n 1024] [--batch 32]
        [--precisions fp32,bf16] [--rounds 3]

Needs: `cargo build --release --workspace` done, the model fetched
(scripts/fetch-model.sh), and `pip install sentence-transformers onnxruntime onnx`. Every
side orders the throughput documents longest first (sentence-transformers' own order):
sentence-transformers by itself, ONNX Runtime (`ort_embed_baseline.py`, the model
exported with `torch.onnx`, 2 threads) and Marquee (`marquee-bench embed
--sort-by-length`, one request of BATCH documents in flight). Marquee runs once per
precision in --precisions: `fp32` (the default model) and `bf16` (the same directory
loaded again with `{"precision": "bf16"}`). Then 200 single documents, one at a time.
Targets (issue 14): fp32 throughput >= 1.5x both peers; single-document p50 over gRPC
<= ONNX Runtime's in-process p50; bf16 throughput >= 2.5x sentence-transformers'.

This machine's speed drifts between minutes, so the sides alternate over --rounds rounds
(never at once, so each has every core); each round's ratio compares runs made seconds
apart, and the table reports medians.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(REPO, "data", "models", "all-MiniLM-L6-v2")
RELEASE = os.path.join(REPO, "target", "release")


def default_movies() -> str:
    shared = os.environ.get("MARQUEE_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
    return os.path.join(shared, "movies.jsonl.gz")


def run_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def marquee(args: argparse.Namespace) -> dict[str, dict]:
    """Marquee's figures per precision, from one server."""
    server = subprocess.Popen(
        [os.path.join(RELEASE, "marquee-server"), "--listen", "127.0.0.1:0",
         "--metrics-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--model", f"minilm={MODEL_DIR}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        addr = "http://" + next(w.split("=", 1)[1] for w in line.split() if w.startswith("grpc="))
        results = {}
        for precision in args.precisions:
            model = "minilm" if precision == "fp32" else f"minilm-{precision}"
            if model != "minilm":
                subprocess.run([os.path.join(RELEASE, "marquee"), "models", "load", "--addr", addr,
                                model, MODEL_DIR, "--options", json.dumps({"precision": precision})],
                               check=True, stdout=subprocess.DEVNULL)
            results[precision] = run_json([
                os.path.join(RELEASE, "marquee-bench"), "--addr", addr, "embed",
                "--movies", args.movies, "--model", model, "--n", str(args.n),
                "--batch", str(args.batch), "--concurrency", "1", "--sort-by-length"])
        return results
    finally:
        server.terminate()
        server.wait()


def peer(script: str, args: argparse.Namespace) -> dict:
    return run_json([sys.executable, os.path.join(REPO, "benchmarks", script),
                     "--model-dir", MODEL_DIR, "--movies", args.movies, "--n", str(args.n),
                     "--batch", str(args.batch), "--max-len", "256"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--movies", default=default_movies())
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--precisions", default="fp32,bf16",
                   help="Marquee precisions to run, comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    args.precisions = args.precisions.split(",")
    if not os.path.isfile(args.movies):
        sys.exit(f"no movie corpus at {args.movies}: pass --movies or set MARQUEE_SHARED_DATA")

    rounds = []
    for i in range(args.rounds):
        st = peer("st_embed_baseline.py", args)
        ort = peer("ort_embed_baseline.py", args)
        mq = marquee(args)
        rounds.append({"sentence_transformers": st, "onnxruntime": ort, "marquee": mq})
        print(f"round {i + 1}: sentence-transformers {st['docs_per_s']:.1f} docs/s, "
              f"p50 {st['single_p50_ms']:.2f} ms; onnxruntime {ort['docs_per_s']:.1f} docs/s, "
              f"p50 {ort['single_p50_ms']:.2f} ms; " + "; ".join(
                  f"Marquee {p} {r['docs_per_s']:.1f} docs/s, p50 {r['single_p50_ms']:.2f} ms"
                  for p, r in mq.items()), file=sys.stderr)

    def figure(r: dict, side: str, key: str) -> float:
        return r["marquee"][side][key] if side in args.precisions else r[side][key]

    def med(side: str, key: str) -> float:
        return statistics.median(figure(r, side, key) for r in rounds)

    st0, ort0 = rounds[0]["sentence_transformers"], rounds[0]["onnxruntime"]
    print(f"Embedding benchmark, {datetime.date.today()}, {platform.machine()}, "
          f"{os.cpu_count()} cores; first {args.n} movies, batches of {args.batch} sorted by "
          f"length, max length 256, all-MiniLM-L6-v2; sentence-transformers "
          f"{st0.get('sentence_transformers')} on torch {st0.get('torch')}, onnxruntime "
          f"{ort0.get('onnxruntime')} ({ort0.get('threads')} threads); Marquee over gRPC, one "
          f"request in flight; median of {args.rounds} alternating rounds\n")
    sides = ["sentence_transformers", "onnxruntime"] + args.precisions
    print("| figure | " + " | ".join(f"Marquee {s}" if s in args.precisions else s.replace("_", "-")
                                   for s in sides) + " |")
    print("|---" * (len(sides) + 1) + "|")
    for key, label in [("docs_per_s", "throughput, docs/s"),
                       ("single_p50_ms", "single-document p50, ms"),
                       ("single_p99_ms", "single-document p99, ms")]:
        print(f"| {label} | " + " | ".join(f"{med(s, key):.2f}" for s in sides) + " |")
    print("\n| Marquee ratio | to sentence-transformers | to onnxruntime | per-round, to ST / to ORT |")
    print("|---|---|---|---|")
    for precision in args.precisions:
        for key, label in [("docs_per_s", "throughput"), ("single_p50_ms", "single p50")]:
            per_round = ", ".join(
                f"{figure(r, precision, key) / r['sentence_transformers'][key]:.2f} / "
                f"{figure(r, precision, key) / r['onnxruntime'][key]:.2f}" for r in rounds)
            print(f"| {precision} {label} | {med(precision, key) / med('sentence_transformers', key):.2f} | "
                  f"{med(precision, key) / med('onnxruntime', key):.2f} | {per_round} |")
    print("\nraw:", json.dumps(rounds))


if __name__ == "__main__":
    main()
