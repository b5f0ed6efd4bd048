#!/usr/bin/env python3
"""Retrieval quality of the encoder's optional precisions against fp32 (issue 14: each
option's figures on the tip-of-the-tongue validation set within 0.005 of fp32's).

Starts a release `marquee-server` on a temporary data directory with all-MiniLM-L6-v2
served at fp32 (`minilm`) and loaded again at each other precision (`minilm-<precision>`),
ingests the shared movie corpus into one exact cosine collection per precision (document
text `"{title} ({year}). {overview|plot}"`, as the shared data README's reference figures),
and scores `tot/reddit_validation.jsonl` with `marquee eval retrieval` on each. Prints one
JSON object: each precision's Recall@1/5/10/25, MRR and NDCG@10, and each option's largest
difference to fp32.

Needs: `cargo build --release -p marquee-server -p marquee-client -p marquee-bert-text`,
`scripts/fetch-model.sh`, and the shared data (`MARQUEE_SHARED_DATA` or `../shared/data`).

    python benchmarks/precision_retrieval.py [--precisions bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(REPO, "target", "release")
MODEL_DIR = os.path.join(REPO, "data", "models", "all-MiniLM-L6-v2")
TEMPLATE = "{title} ({year}). {overview|plot}"
TOLERANCE = 0.005


def cli(addr: str, *args: str) -> dict | None:
    """Runs the `marquee` CLI against `addr`; its JSON output when it prints one."""
    out = subprocess.run([os.path.join(RELEASE, "marquee"), "--addr", addr, "--json", *args],
                         check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    return json.loads(out.splitlines()[-1]) if out else None


def figures(report: dict) -> dict[str, float]:
    """The report's aggregate metrics as a flat name → value map."""
    flat = {}
    for key, value in report.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[key] = value
        elif isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, (int, float)):
                    flat[f"{key}@{sub}"] = v
    return flat


def main() -> None:
    shared = os.environ.get("MARQUEE_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--movies", default=os.path.join(shared, "movies.jsonl.gz"))
    p.add_argument("--queries", default=os.path.join(shared, "tot", "reddit_validation.jsonl"))
    p.add_argument("--precisions", default="bf16", help="options compared with fp32, comma-separated")
    args = p.parse_args()
    for path in (args.movies, args.queries):
        if not os.path.isfile(path):
            sys.exit(f"no {path}: pass --movies / --queries or set MARQUEE_SHARED_DATA")
    precisions = ["fp32", *args.precisions.split(",")]
    with tempfile.TemporaryDirectory() as data_dir:
        server = subprocess.Popen(
            [os.path.join(RELEASE, "marquee-server"), "--listen", "127.0.0.1:0",
             "--metrics-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
             "--data-dir", data_dir, "--model", f"minilm={MODEL_DIR}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = server.stdout.readline()
            addr = "http://" + next(w.split("=", 1)[1] for w in line.split() if w.startswith("grpc="))
            reports = {}
            for precision in precisions:
                model = "minilm" if precision == "fp32" else f"minilm-{precision}"
                if model != "minilm":
                    cli(addr, "models", "load", model, MODEL_DIR,
                        "--options", json.dumps({"precision": precision}))
                collection = f"movies-{precision}"
                cli(addr, "collections", "create", collection, "--dim", "384",
                    "--metric", "cosine", "--model", model)
                cli(addr, "ingest", collection, args.movies, "--id-field", "imdb_id",
                    "--template", TEMPLATE)
                reports[precision] = figures(cli(addr, "eval", "retrieval", collection, args.queries))
        finally:
            server.terminate()
            server.wait()
    result = {"queries": args.queries, "figures": reports, "largest_difference_to_fp32": {}}
    for precision in precisions[1:]:
        worst = max(abs(reports[precision][k] - reports["fp32"][k])
                    for k in reports["fp32"] if k != "queries")
        result["largest_difference_to_fp32"][precision] = {
            "value": round(worst, 6), "within_tolerance": worst <= TOLERANCE}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
