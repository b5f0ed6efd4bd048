#!/usr/bin/env python3
"""The recall workflow on the shared data (issue 13), and BERTScore throughput against
bert-score.

Usage (from the repo root, after `cargo build --release --workspace`):

    python3 benchmarks/recall_workflow.py [--data ../shared/data] [--limit 100]
        [--generator-dir plugins/qwen2-vl/tests/fixtures/tiny-nested]

1. Recall workflow: for movies with a poster, a plot and real tip-of-the-tongue queries
   (DATA/tot/reddit_train.jsonl), the served generator writes a recall from the poster and
   the plot (`marquee eval generation --generator`), scored on the server against the real
   queries as references: BLEU, ROUGE, BERTScore (all-MiniLM-L6-v2, layer 6). The default
   generator is the tiny random Qwen2.5-VL of the parity tests: with random weights the
   scores only check the pipeline, not the paper's quality figures.
2. Throughput: the same items' plots as candidates against the queries, scored with
   BERTScore by `EvaluateGeneration` (candidates given) and by bert-score 0.3.13 in-process
   on the same model, layer and texts (when bert_score imports: put bert-score 0.3.13 and
   transformers 4.57 on PYTHONPATH, see the fixture script
   server/tests/fixtures/generation_metrics/make_bertscore_fixtures.py); items/s of each.

Writes benchmarks/results/recall_workflow.json and prints a Markdown table.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
CLI = os.path.join(BIN, "marquee")
MINILM = os.path.join(ROOT, "data", "models", "all-MiniLM-L6-v2")
PROMPT = "Here is the poster of a film. Its plot: {plot} Describe what you remember of it, as in a post asking for its title."
LAYER = 6


def movies_with_queries(data: str, limit: int) -> list[dict]:
    """Movies with a poster and a plot that real queries point to, with those queries."""
    queries: dict[str, list[str]] = {}
    with open(os.path.join(data, "tot", "reddit_train.jsonl")) as f:
        for line in f:
            q = json.loads(line)
            for movie in q["relevant"]:
                queries.setdefault(movie, []).append(q["query"])
    items = []
    with gzip.open(os.path.join(data, "movies.jsonl.gz"), "rt") as f:
        for line in f:
            m = json.loads(line)
            plot = m.get("overview") or m.get("plot")
            if m.get("poster") and plot and m["imdb_id"] in queries:
                items.append({
                    "id": m["imdb_id"],
                    "title": m.get("title", ""),
                    "plot": plot,
                    "poster": os.path.join(data, m["poster"]),
                    "candidate": plot,
                    "references": queries[m["imdb_id"]],
                })
    items.sort(key=lambda i: i["id"])
    return items[:limit]


def start_server(work: str, generator_dir: str) -> tuple[subprocess.Popen, str]:
    config = os.path.join(work, "marquee.toml")
    with open(config, "w") as f:
        f.write(f"""plugin_dir = "{BIN}"
plugins = ["marquee_bert_text", "marquee_qwen2_vl"]
default_model = "minilm"
data_dir = "{os.path.join(work, 'data')}"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"

[models.minilm]
path = "{MINILM}"
options = {{ max_seq_length = 512 }}

[models.recall]
path = "{os.path.abspath(generator_dir)}"
""")
    server = subprocess.Popen([os.path.join(BIN, "marquee-server"), "--config", config, "--http-listen", ""],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline()
    addr = next((w.split("=", 1)[1] for w in line.split() if w.startswith("grpc=")), None)
    if not addr:
        server.kill()
        sys.exit(f"the server did not start: {line!r}")
    return server, f"http://{addr}"


def cli_eval(url: str, items_file: str, extra: list[str]) -> tuple[dict, float]:
    began = time.perf_counter()
    out = subprocess.run([CLI, "--addr", url, "--json", "eval", "generation", items_file,
                          "--bertscore-model", "minilm", "--bertscore-layer", str(LAYER), *extra],
                         capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if out.returncode != 0:
        sys.exit(f"marquee eval generation failed:\n{out.stderr}")
    return json.loads(out.stdout), seconds


def bert_score_in_process(items: list[dict]) -> dict:
    try:
        import bert_score  # noqa: PLC0415
        import torch  # noqa: PLC0415
    except ImportError as e:
        return {"missing": f"bert_score does not import: {e}"}
    torch.set_num_threads(os.cpu_count() or 1)
    cands = [i["candidate"] for i in items]
    refs = [i["references"] for i in items]
    # The model loaded before timing, as the server's is.
    scorer = bert_score.BERTScorer(model_type=MINILM, num_layers=LAYER, lang="en", batch_size=64)
    scorer.score(cands[:2], refs[:2])
    began = time.perf_counter()
    p, r, f = scorer.score(cands, refs)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "items_per_s": len(items) / seconds,
            "bertscore_precision": p.mean().item(), "bertscore_recall": r.mean().item(),
            "bertscore_f1": f.mean().item(), "version": bert_score.__version__}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("MARQUEE_SHARED_DATA",
                                                      os.path.join(ROOT, "..", "shared", "data")))
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--generator-dir",
                    default=os.path.join(ROOT, "plugins", "qwen2-vl", "tests", "fixtures", "tiny-nested"))
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()
    if not os.path.isdir(args.data):
        sys.exit(f"no shared data at {args.data} (--data or MARQUEE_SHARED_DATA)")
    items = movies_with_queries(args.data, args.limit)
    with tempfile.TemporaryDirectory() as work:
        items_file = os.path.join(work, "items.jsonl")
        with open(items_file, "w") as f:
            for i in items:
                f.write(json.dumps(i) + "\n")
        server, url = start_server(work, args.generator_dir)
        try:
            recall, recall_s = cli_eval(url, items_file, [
                "--generator", "recall", "--prompt-template", PROMPT,
                "--image-template", "{poster}", "--max-new-tokens", str(args.max_new_tokens)])
            given, given_s = cli_eval(url, items_file, [])
        finally:
            server.terminate()
            server.wait()
    peer = bert_score_in_process(items)
    references = sum(len(i["references"]) for i in items)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "items": len(items),
        "references": references,
        "generator": os.path.relpath(os.path.abspath(args.generator_dir), ROOT),
        "recall": {**recall, "seconds": recall_s},
        "plots_as_candidates": {**given, "seconds": given_s, "items_per_s": len(items) / given_s},
        "bert_score_in_process": peer,
    }
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks", "results", "recall_workflow.json"), "w") as f:
        json.dump(result, f, indent=2)
    keys = ["bleu", "rouge1", "rouge2", "rougeL", "rougeLsum",
            "bertscore_precision", "bertscore_recall", "bertscore_f1"]
    print(f"\n{len(items)} movies, {references} real queries as references\n")
    print("| candidates | " + " | ".join(keys) + " | seconds |")
    print("|---|" + "---|" * (len(keys) + 1))
    for name, r, s in [("generated recalls (random weights)", recall, recall_s),
                       ("plots", given, given_s)]:
        print(f"| {name} | " + " | ".join(f"{r.get(k, float('nan')):.4f}" for k in keys)
              + f" | {s:.1f} |")
    print(f"\nBERTScore throughput, plots vs queries: EvaluateGeneration (BLEU + ROUGE + "
          f"BERTScore, via the CLI) {len(items) / given_s:.1f} items/s")
    if "missing" in peer:
        print(f"bert-score in-process: missing ({peer['missing']})")
    else:
        print(f"bert-score {peer['version']} in-process (BERTScore only): "
              f"{peer['items_per_s']:.1f} items/s; F1 {peer['bertscore_f1']:.6f} "
              f"(Marquee {given['bertscore_f1']:.6f})")


if __name__ == "__main__":
    main()
