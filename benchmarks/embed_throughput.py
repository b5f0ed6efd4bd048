#!/usr/bin/env python3
"""Embedding throughput and latency: Marquee over gRPC against sentence-transformers
in-process, same model, same documents, same batch size and max length, in one run.

    python3 benchmarks/embed_throughput.py [--movies PATH] [--n 1024] [--batch 32]

Needs: `cargo build --release --workspace` done, the model fetched
(scripts/fetch-model.sh), and `pip install sentence-transformers`. The two sides run one
after the other (never at once) so each has every core. Prints a Markdown table with the
ratios (target: gRPC docs/s >= 1.2x sentence-transformers'; gRPC single-document p50 <=
sentence-transformers' in-process single-document p50).

This machine's speed drifts by up to 2x between minutes, so the two sides alternate over
--rounds rounds; each round's ratio compares runs made seconds apart, and the table
reports medians.
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


def marquee(args: argparse.Namespace) -> dict:
    server = subprocess.Popen(
        [os.path.join(RELEASE, "marquee-server"), "--listen", "127.0.0.1:0",
         "--metrics-listen", "127.0.0.1:0", "--model", f"minilm={MODEL_DIR}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        addr = next(w.split("=", 1)[1] for w in line.split() if w.startswith("grpc="))
        return run_json([
            os.path.join(RELEASE, "marquee-bench"), "--addr", f"http://{addr}", "embed",
            "--movies", args.movies, "--model", "minilm", "--n", str(args.n),
            "--batch", str(args.batch), "--concurrency", str(args.concurrency)])
    finally:
        server.terminate()
        server.wait()


def sentence_transformers(args: argparse.Namespace) -> dict:
    return run_json([sys.executable, os.path.join(REPO, "benchmarks", "st_embed_baseline.py"),
                     "--model-dir", MODEL_DIR, "--movies", args.movies, "--n", str(args.n),
                     "--batch", str(args.batch), "--max-len", "256"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--movies", default=default_movies())
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=1,
                   help="requests in flight during Marquee's throughput run")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if not os.path.isfile(args.movies):
        sys.exit(f"no movie corpus at {args.movies}: pass --movies or set MARQUEE_SHARED_DATA")

    rounds = []
    for i in range(args.rounds):
        st, mq = sentence_transformers(args), marquee(args)
        rounds.append({"sentence_transformers": st, "marquee": mq})
        print(f"round {i + 1}: sentence-transformers {st['docs_per_s']:.1f} docs/s, "
              f"p50 {st['single_p50_ms']:.2f} ms; Marquee {mq['docs_per_s']:.1f} docs/s, "
              f"p50 {mq['single_p50_ms']:.2f} ms", file=sys.stderr)

    def med(side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in rounds)

    st0 = rounds[0]["sentence_transformers"]
    print(f"Embedding benchmark, {datetime.date.today()}, {platform.machine()}, "
          f"{os.cpu_count()} cores; first {args.n} movies, batch {args.batch}, max length 256, "
          f"all-MiniLM-L6-v2; sentence-transformers {st0.get('sentence_transformers')}, "
          f"torch {st0.get('torch')} ({st0.get('threads')} threads); Marquee with "
          f"{args.concurrency} request(s) in flight; median of {args.rounds} alternating rounds\n")
    print("| figure | sentence-transformers in-process | Marquee over gRPC | ratio (Marquee / ST) | per-round ratios |")
    print("|---|---|---|---|---|")
    for key, label, better in [("docs_per_s", "throughput, docs/s", "higher"),
                               ("single_p50_ms", "single-document p50, ms", "lower"),
                               ("single_p99_ms", "single-document p99, ms", "lower")]:
        per_round = ", ".join(f"{r['marquee'][key] / r['sentence_transformers'][key]:.2f}" for r in rounds)
        print(f"| {label} ({better} is better) | {med('sentence_transformers', key):.2f} | "
              f"{med('marquee', key):.2f} | "
              f"{med('marquee', key) / med('sentence_transformers', key):.2f} | {per_round} |")
    print("\nraw:", json.dumps(rounds))


if __name__ == "__main__":
    main()
