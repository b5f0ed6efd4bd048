#!/usr/bin/env python3
"""Embedding throughput and latency: Marquee over gRPC against sentence-transformers
in-process, same model, same documents, same batch size and max length, in one run.

    python3 benchmarks/embed_throughput.py [--movies PATH] [--n 1024] [--batch 32]

Needs: `cargo build --release --workspace` done, the model fetched
(scripts/fetch-model.sh), and `pip install sentence-transformers`. The two sides run one
after the other (never at once) so each has every core. Prints a Markdown table with the
ratios (target: gRPC docs/s >= 1.2x sentence-transformers'; gRPC single-document p50 <=
sentence-transformers' in-process single-document p50).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
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


def marquee(args: argparse.Namespace) -> list[dict]:
    server = subprocess.Popen(
        [os.path.join(RELEASE, "marquee-server"), "--listen", "127.0.0.1:0",
         "--metrics-listen", "127.0.0.1:0", "--model", f"minilm={MODEL_DIR}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        addr = next(w.split("=", 1)[1] for w in line.split() if w.startswith("grpc="))
        results = []
        for concurrency in args.concurrency:
            results.append(run_json([
                os.path.join(RELEASE, "marquee-bench"), "--addr", f"http://{addr}", "embed",
                "--movies", args.movies, "--model", "minilm", "--n", str(args.n),
                "--batch", str(args.batch), "--concurrency", str(concurrency)]))
        return results
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--movies", default=default_movies())
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = p.parse_args()
    if not os.path.isfile(args.movies):
        sys.exit(f"no movie corpus at {args.movies}: pass --movies or set MARQUEE_SHARED_DATA")

    st = run_json([sys.executable, os.path.join(REPO, "benchmarks", "st_embed_baseline.py"),
                   "--model-dir", MODEL_DIR, "--movies", args.movies, "--n", str(args.n),
                   "--batch", str(args.batch), "--max-len", "256"])
    runs = marquee(args)

    print(f"Embedding benchmark, {datetime.date.today()}, {platform.machine()}, "
          f"{os.cpu_count()} cores; first {args.n} movies, batch {args.batch}, max length 256, "
          f"all-MiniLM-L6-v2; sentence-transformers {st.get('sentence_transformers')}, "
          f"torch {st.get('torch')} ({st.get('threads')} threads)\n")
    print("| system | docs/s | ratio | single-doc p50 ms | single-doc p99 ms |")
    print("|---|---|---|---|---|")
    print(f"| sentence-transformers in-process | {st['docs_per_s']:.1f} | 1.00 | "
          f"{st['single_p50_ms']:.2f} | {st['single_p99_ms']:.2f} |")
    for r in runs:
        print(f"| Marquee gRPC, {r['concurrency']} request(s) in flight | {r['docs_per_s']:.1f} | "
              f"{r['docs_per_s'] / st['docs_per_s']:.2f} | {r['single_p50_ms']:.2f} | "
              f"{r['single_p99_ms']:.2f} |")
    print("\nraw:", json.dumps({"sentence_transformers": st, "marquee": runs}))


if __name__ == "__main__":
    main()
