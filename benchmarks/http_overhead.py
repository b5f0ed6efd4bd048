#!/usr/bin/env python3
"""The HTTP API's cost against gRPC's: `/v1/embeddings` and `Embed` on one server, same
model, same documents, same client program (`marquee-bench embed`, Rust: tonic for gRPC,
hyper HTTP/1.1 keep-alive with JSON floats for HTTP), alternating rounds.

    python3 benchmarks/http_overhead.py [--movies PATH] [--n 1024] [--batch 32]
        [--single 300] [--single-chars 40] [--rounds 3]

Needs `cargo build --release --workspace` done and the model fetched
(scripts/fetch-model.sh). Per round and transport: throughput of --n documents in
batches of --batch (4 requests in flight), then --single short queries (each document's
first --single-chars characters, where the transport's own cost shows) one at a time.

Per-request overhead = mean single-query latency seen by the client - the model's own
time for those same requests (queue + tokenize + inference, as the server reports them:
gRPC's response timings, the HTTP API's Server-Timing header), so that the model's drift
between runs cancels. Target (issue 15): HTTP overhead <= 1.5x gRPC's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess

# The paths and the movie file default are embed_throughput.py's (this folder).
from embed_throughput import MODEL_DIR, RELEASE, default_movies


def bench(grpc: str, http: str | None, args: argparse.Namespace) -> dict:
    cmd = [os.path.join(RELEASE, "marquee-bench"), "--addr", grpc, "embed",
           "--movies", args.movies, "--model", "minilm", "--n", str(args.n),
           "--batch", str(args.batch), "--concurrency", "4", "--single", str(args.single),
           "--single-chars", str(args.single_chars)]
    if http:
        cmd += ["--http", http]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def model_ms(report: dict) -> float:
    """The model's mean time per single query, as the server reported it."""
    s = report["single_server_mean_ms"]
    return s["queue"] + s["tokenize"] + s["inference"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movies", default=default_movies())
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--single", type=int, default=300)
    parser.add_argument("--single-chars", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    server = subprocess.Popen(
        [os.path.join(RELEASE, "marquee-server"), "--listen", "127.0.0.1:0",
         "--metrics-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
         "--model", f"minilm={MODEL_DIR}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        fields = dict(w.split("=", 1) for w in server.stdout.readline().split() if "=" in w)
        grpc, http = "http://" + fields["grpc"], fields["http"]
        rounds = []
        for r in range(args.rounds):
            g = bench(grpc, None, args)
            h = bench(grpc, http, args)
            row = {
                "grpc_docs_per_s": g["docs_per_s"], "http_docs_per_s": h["docs_per_s"],
                "grpc_single_mean_ms": g["single_mean_ms"], "http_single_mean_ms": h["single_mean_ms"],
                "grpc_single_p50_ms": g["single_p50_ms"], "http_single_p50_ms": h["single_p50_ms"],
                "grpc_model_ms": model_ms(g), "http_model_ms": model_ms(h),
                "grpc_overhead_ms": g["single_mean_ms"] - model_ms(g),
                "http_overhead_ms": h["single_mean_ms"] - model_ms(h),
            }
            row["overhead_ratio"] = row["http_overhead_ms"] / row["grpc_overhead_ms"]
            row["throughput_ratio"] = row["http_docs_per_s"] / row["grpc_docs_per_s"]
            rounds.append(row)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    finally:
        server.terminate()
        server.wait()

    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print()
    print(f"{datetime.date.today()} · {platform.node()} · {os.cpu_count()} CPUs · "
          f"{args.rounds} rounds, medians")
    print(f"| transport | docs/s (batch {args.batch}, 4 in flight) | single p50 ms | "
          "single mean ms | model mean ms | overhead ms (mean - model) |")
    print("|---|---|---|---|---|---|")
    for t in ("grpc", "http"):
        print(f"| {t} | {median[t + '_docs_per_s']:.1f} | {median[t + '_single_p50_ms']:.3f} | "
              f"{median[t + '_single_mean_ms']:.3f} | {median[t + '_model_ms']:.3f} | "
              f"{median[t + '_overhead_ms']:.3f} |")
    per_round = ", ".join(f"{r['overhead_ratio']:.2f}" for r in rounds)
    print(f"\nHTTP/gRPC overhead per request: {median['overhead_ratio']:.2f}x "
          f"(rounds {per_round}; target <= 1.5x); "
          f"throughput HTTP/gRPC {median['throughput_ratio']:.2f}x")


if __name__ == "__main__":
    main()
