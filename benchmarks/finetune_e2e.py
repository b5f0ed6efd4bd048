#!/usr/bin/env python3
"""Issue 18 end to end on the shared tip-of-the-tongue data, with the peer in the same run:
Marquee fine-tunes all-MiniLM-L6-v2 on the real training queries against the movie
collection (`TrainingService.FineTune` through the Python client, which logs the steps), re-embeds the collection with the result and evaluates it; sentence-transformers
runs the same recipe (`SentenceTransformerTrainer`, MultipleNegativesRankingLoss) on the same
pairs with the same threads. Reported: validation MRR / R@10 before and after (both sides),
training examples/s of each and their ratio, Search p50/p99 on the server while it trains
(a probe of 5 searches a second, against the same probe on an idle server), and the cosine between sentence-transformers' embeddings of the
saved directory and the vectors the server stored after re-embedding.

    python benchmarks/finetune_e2e.py [--addr http://127.0.0.1:50051] [--data ../shared/data]
        [--cli target/release/marquee] [--threads 2] [--epochs 1] [--skip-peer]
        [--train-queries N]

Needs a running server on its defaults (`scripts/serve.sh`: all-MiniLM-L6-v2 served as
`all-MiniLM-L6-v2`), a Python with sentence-transformers 6, torch, datasets, accelerate,
grpcio and protobuf (the Marquee Python client is imported from clients/python/src). The
two trainings run one after the other, never together. Recipe (both sides): 1 epoch,
batch 32, lr 2e-5, linear decay after 10% warm-up, weight decay 0.01, gradient clipping 1.0,
scale 20, one pair per (query, relevant movie); document text
"{title} ({year}). {overview or plot}" truncated at the model's 256 tokens. `--train-queries N`
trains both sides on the first N training queries only: a shorter run for the speed ratio
(its validation figures are then not the recipe's).
"""

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "clients" / "python" / "src"))
import marquee  # noqa: E402

COLLECTION = "tot-finetune"
BASE = "all-MiniLM-L6-v2"


def doc_text(movie):
    body = movie.get("overview") or movie.get("plot") or ""
    return f"{movie.get('title', '')} ({movie.get('year', '')}). {body}"


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def cli(args, *rest):
    out = subprocess.run(
        [args.cli, "--addr", args.addr, "--json", *rest], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def search_latencies(client, queries, stop, out, interval=0.2):
    """Issues a text search every `interval` seconds (an open-loop probe that leaves the
    CPU to the training) until `stop`; appends seconds per call."""
    i = 0
    while not stop.is_set():
        start = time.perf_counter()
        client.search(COLLECTION, queries[i % len(queries)], k=10)
        out.append(time.perf_counter() - start)
        i += 1
        stop.wait(max(0.0, interval - (time.perf_counter() - start)))


def percentiles(samples):
    ms = sorted(s * 1000 for s in samples)
    if not ms:
        return {}
    return {
        "n": len(ms),
        "p50_ms": round(ms[len(ms) // 2], 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
    }


def st_peer(args, model_dir, pairs, movies, validation):
    """sentence-transformers' trainer on the same pairs; its validation MRR over the movies."""
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )

    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    model = SentenceTransformer(str(model_dir), device="cpu")
    data = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    out_dir = Path(args.workdir) / "st-finetuned"
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=32,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        weight_decay=0.01,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        seed=42,
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        dataloader_drop_last=False,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args,
        train_dataset=data,
        loss=losses.MultipleNegativesRankingLoss(model, scale=20.0),
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    ids = [m["imdb_id"] for m in movies]
    docs = model.encode([doc_text(m) for m in movies], batch_size=64, normalize_embeddings=True)
    queries = model.encode([q["query"] for q in validation], batch_size=64, normalize_embeddings=True)
    scores = queries @ docs.T
    rr, r10 = [], []
    index = {i: n for n, i in enumerate(ids)}
    for q, row in zip(validation, scores):
        order = np.argsort(-row, kind="stable")
        ranks = [int(np.where(order == index[r])[0][0]) + 1 for r in q["relevant"]]
        rr.append(1.0 / min(ranks))
        r10.append(sum(r <= 10 for r in ranks) / len(ranks))
    return {
        "seconds": round(seconds, 1),
        "examples_per_second": round(len(pairs) * args.epochs / seconds, 2),
        "mrr": round(float(np.mean(rr)), 4),
        "recall@10": round(float(np.mean(r10)), 4),
        "versions": {
            "sentence-transformers": __import__("sentence_transformers").__version__,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addr", default="http://127.0.0.1:50051")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--cli", default=str(REPO / "target" / "release" / "marquee"))
    parser.add_argument("--model-dir", default=str(REPO / "data" / "models" / BASE))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--output-model", default="minilm-tot")
    parser.add_argument("--workdir", default="/tmp/marquee-finetune-e2e")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--train-queries", type=int, default=None)
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    data = Path(args.data)
    if not (data / "tot" / "reddit_train.jsonl").is_file():
        sys.exit(f"{data} has no tot/reddit_train.jsonl (the shared data); nothing to do")
    with gzip.open(data / "movies.jsonl.gz", "rt") as f:
        movies = [json.loads(line) for line in f]
    train = read_jsonl(data / "tot" / "reddit_train.jsonl")[: args.train_queries]
    validation = read_jsonl(data / "tot" / "reddit_validation.jsonl")
    text_of = {m["imdb_id"]: doc_text(m) for m in movies}
    pairs = [(q["query"], text_of[r]) for q in train for r in q["relevant"]]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "train_queries": len(train),
        "train_pairs": len(pairs),
        "threads": args.threads,
    }

    client = marquee.Client(args.addr.removeprefix("http://"))
    names = [c.name for c in client.list_collections()]
    if COLLECTION in names:
        client.delete_collection(COLLECTION)
    if args.output_model in [m.name for m in client.list_models()]:
        sys.exit(f"model {args.output_model} is already served: pick another --output-model")
    cli(args, "collections", "create", COLLECTION, "--dim", "384", "--metric", "cosine", "--model", BASE)
    jsonl = Path(args.workdir) / "movies.jsonl"
    with open(jsonl, "w") as f:
        for m in movies:
            f.write(json.dumps(m) + "\n")
    start = time.perf_counter()
    cli(args, "ingest", COLLECTION, str(jsonl), "--id-field", "imdb_id", "--template", "{title} ({year}). {overview|plot}")
    report["ingest_seconds"] = round(time.perf_counter() - start, 1)
    val_path = str(data / "tot" / "reddit_validation.jsonl")
    report["vanilla"] = cli(args, "eval", "retrieval", COLLECTION, val_path)
    print("vanilla", report["vanilla"], flush=True)

    idle = []
    stop = threading.Event()
    probe = [q["query"][:300] for q in validation[:50]]
    t = threading.Thread(target=search_latencies, args=(client, probe, stop, idle))
    t.start()
    time.sleep(20)
    stop.set()
    t.join()
    report["search_idle"] = percentiles(idle)

    busy = []
    stop = threading.Event()
    t = threading.Thread(target=search_latencies, args=(client, probe, stop, busy))
    t.start()
    start = time.perf_counter()
    def log_step(step, total):
        if step % 10 == 0 or step == total:
            print(f"step {step}/{total} at {time.perf_counter() - start:.0f} s", flush=True)

    def log_epoch(epoch):
        print(f"epoch {epoch.epoch}: loss {epoch.mean_loss:.4f}, "
              f"mrr {epoch.validation.values.get('mrr', 0):.4f} ({epoch.seconds:.0f} s)", flush=True)

    def queries(rows):
        return [marquee.EvalQuery(q["query_id"], q["query"], q["relevant"]) for q in rows]

    trained = client.fine_tune(
        COLLECTION, base_model=BASE, output_model=args.output_model,
        train=queries(train), validation=queries(validation),
        progress=log_step, on_epoch=log_epoch, timeout=24 * 3600,
        epochs=args.epochs, batch_size=32, learning_rate=2e-5, threads=args.threads,
    )
    result = {
        "model": trained.model, "path": trained.path, "dimension": trained.dimension,
        "steps": trained.steps, "best_epoch": trained.best_epoch, "seconds": round(trained.seconds, 1),
        "examples_per_second": round(trained.examples_per_second, 3),
        "before": dict(trained.before.values), "after": dict(trained.after.values),
    }
    stop.set()
    t.join()
    report["marquee_finetune"] = result
    report["marquee_finetune"]["wall_seconds"] = round(time.perf_counter() - start, 1)
    report["search_during_training"] = percentiles(busy)
    print("finetune", json.dumps(result), flush=True)

    start = time.perf_counter()
    cli(args, "collections", "reembed", COLLECTION, "--model", args.output_model)
    report["reembed_seconds"] = round(time.perf_counter() - start, 1)
    report["finetuned"] = cli(args, "eval", "retrieval", COLLECTION, val_path)
    print("finetuned", report["finetuned"], flush=True)

    # The saved directory in sentence-transformers against the vectors the server stored.
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(result["path"], device="cpu")
    sample = [m["imdb_id"] for m in movies[:: max(1, len(movies) // 64)]][:64]
    stored = client.get(COLLECTION, sample, with_vectors=True)
    st_vectors = st.encode([text_of[i] for i in sample], normalize_embeddings=True)
    by_id = {item.id: item.vector for item in stored.items}
    cosines = [float(np.dot(st_vectors[n], by_id[i]) / np.linalg.norm(by_id[i])) for n, i in enumerate(sample)]
    report["st_parity_min_cosine"] = round(min(cosines), 7)

    if not args.skip_peer:
        report["sentence_transformers"] = st_peer(args, Path(args.model_dir), pairs, movies, validation)
        print("peer", report["sentence_transformers"], flush=True)
        report["examples_per_second_ratio"] = round(
            result["examples_per_second"] / report["sentence_transformers"]["examples_per_second"], 3
        )
    print(json.dumps(report, indent=1))
    with open(Path(args.workdir) / "report.json", "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
