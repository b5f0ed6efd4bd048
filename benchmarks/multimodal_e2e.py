#!/usr/bin/env python3
"""Multimodal end to end on the shared movie data (issue 6): text-only, image-only and
fused collections of the movies that have posters, each evaluated on MovieLens-100K.

Usage (from the repo root, after
`cargo build --release -p marquee-server -p marquee-resnet-poster -p marquee-fusion
-p marquee-bert-text -p marquee-client`):

    python3 benchmarks/multimodal_e2e.py [--data ../shared/data] [--work /tmp/marquee-mm]

It writes random ResNet-50 and fusion weights into WORK/models
(benchmarks/make_multimodal_weights.py), the movies with a poster into WORK/movies.jsonl
(with a `posters` link to DATA/posters, so the image template is relative to the file),
starts a release server on free ports with the three models and the pipeline
`movies-fused` (config in WORK/marquee.toml), then for each collection: create, `marquee
ingest` (items/s, failures), `marquee ratings import`, `marquee eval recommend --k
5,10,20 --json`. The figures go to benchmarks/results/multimodal_e2e.json and, as a
Markdown table, to stdout. Random weights: this checks the pipeline, not the paper's
quality claims.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
CLI = os.path.join(BIN, "marquee")
TEMPLATE = "{title} ({year}). {overview|plot}"


def run(*args, capture=True):
    """Runs a command, failing loudly; returns its stdout."""
    result = subprocess.run(args, capture_output=capture, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def write_movies(data, work):
    """The movies with a poster file, as JSONL beside a link to the posters."""
    path = os.path.join(work, "movies.jsonl")
    count = 0
    with gzip.open(os.path.join(data, "movies.jsonl.gz"), "rt") as src, open(path, "w") as out:
        for line in src:
            movie = json.loads(line)
            if os.path.isfile(os.path.join(data, "posters", f"{movie['imdb_id']}.jpg")):
                out.write(json.dumps(movie) + "\n")
                count += 1
    link = os.path.join(work, "posters")
    if not os.path.islink(link):
        os.symlink(os.path.abspath(os.path.join(data, "posters")), link)
    return path, count


def write_config(work):
    models = os.path.join(work, "models")
    config = os.path.join(work, "marquee.toml")
    with open(config, "w") as f:
        f.write(f"""
default_model = "minilm"
[models.minilm]
path = "{os.path.join(ROOT, 'data/models/all-MiniLM-L6-v2')}"
plugin = "bert-text"
options = {{ max_seq_length = 256 }}
[models.resnet50]
path = "{os.path.join(models, 'resnet50')}"
plugin = "resnet-poster"
[models.armor]
path = "{os.path.join(models, 'armor')}"
plugin = "fusion"
[pipelines.movies-fused]
text = "minilm"
image = "resnet50"
fusion = "armor"
""")
    return config


def start_server(work, config):
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen(
        [os.path.join(BIN, "marquee-server"), "--config", config, "--listen", "127.0.0.1:0",
         "--metrics-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", os.path.join(work, "data"),
         "--plugin-dir", BIN],
        stdout=subprocess.PIPE, stderr=log, text=True)
    line = server.stdout.readline()
    if "grpc=" not in line:
        server.kill()
        sys.exit(f"server did not start: {line!r}; see {log.name}")
    grpc = line.split("grpc=")[1].split()[0]
    return server, f"http://{grpc}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("MARQUEE_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data")))
    parser.add_argument("--work", default="/tmp/marquee-mm")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.data, "movies.jsonl.gz")):
        sys.exit(f"no shared data at {args.data} (set --data or MARQUEE_SHARED_DATA)")
    os.makedirs(args.work, exist_ok=True)
    run(sys.executable, os.path.join(ROOT, "benchmarks", "make_multimodal_weights.py"),
        os.path.join(args.work, "models"))
    movies, count = write_movies(args.data, args.work)
    print(f"{count} movies with a poster", file=sys.stderr)
    server, addr = start_server(args.work, write_config(args.work))
    ratings = os.path.join(args.data, "ratings", "ml_100k.csv")
    collections = [
        ("movies-text", 384, "minilm", ["--template", TEMPLATE]),
        ("movies-poster", 2048, "resnet50", ["--image-template", "posters/{imdb_id}.jpg"]),
        ("movies-fused", 256, "movies-fused",
         ["--template", TEMPLATE, "--image-template", "posters/{imdb_id}.jpg"]),
    ]
    results = {"movies": count, "collections": {}}
    try:
        for name, dim, model, content in collections:
            cli = [CLI, "--addr", addr]
            run(*cli, "collections", "create", name, "--dim", str(dim), "--metric", "cosine",
                "--model", model)
            started = time.time()
            ingest = json.loads(run(*cli, "--json", "ingest", name, movies, "--id-field",
                                    "imdb_id", *content, "--payload", "title,year,genres"))
            ingest["wall_seconds"] = time.time() - started
            ingest["failures"] = count - ingest["items"]
            print(f"{name}: {ingest}", file=sys.stderr)
            run(*cli, "ratings", "import", name, ratings)
            evaluation = json.loads(run(*cli, "--json", "eval", "recommend", name, "--k", "5,10,20"))
            results["collections"][name] = {"model": model, "ingest": ingest, "eval": evaluation}
    finally:
        server.terminate()
        server.wait(timeout=60)
    out = os.path.join(ROOT, "benchmarks", "results", "multimodal_e2e.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    metrics = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]
    print("| collection | model | items | failures | items/s | " + " | ".join(metrics) + " |")
    print("|---|---|---:|---:|---:|" + "---:|" * len(metrics))
    for name, r in results["collections"].items():
        i, e = r["ingest"], r["eval"]
        print(f"| {name} | {r['model']} | {i['items']} | {i['failures']} | {i['items_per_s']:.1f} | "
              + " | ".join(f"{e[m]:.4f}" for m in metrics) + " |")
    pop = next(iter(results["collections"].values()))["eval"]["popularity"]
    print("| popularity baseline | | | | | " + " | ".join(f"{pop[m]:.4f}" for m in metrics) + " |")
    users = {n: (r["eval"]["users"], r["eval"]["skipped"]) for n, r in results["collections"].items()}
    print(f"\nusers evaluated / skipped: {users}")


if __name__ == "__main__":
    main()
