#!/usr/bin/env python3
"""In-process sentence-transformers baseline for document embedding.

Measures what the Python reference stack does on this machine, so the Rust
server's figures have something to be compared against:

  (a) throughput: encode the first N movie documents with batch_size=BATCH -> docs/s
  (b) single-document latency: encode 200 documents one at a time (in corpus
      order) -> p50 / p99 in milliseconds

Usage:

    python3 benchmarks/st_embed_baseline.py \
        --model-dir data/models/all-MiniLM-L6-v2 \
        --movies ../shared/data/movies.jsonl.gz \
        [--n 1024] [--batch 32] [--max-len 256] [--threads N]

--movies defaults to $MARQUEE_SHARED_DATA/movies.jsonl.gz (or ../shared/data from the
repo root); the script exits with a clear message (status 2) when the file is absent.
Prints one JSON object on stdout; logs go to stderr.

`doc_text(movie)` and `load_movies(path)` are importable for other scripts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from typing import Iterable, Iterator

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL_DIR = os.path.join(REPO_ROOT, "data", "models", "all-MiniLM-L6-v2")
SINGLE_DOCS = 200


def doc_text(movie: dict) -> str:
    """The document text embedded for one movie.

    Exactly f"{title} ({year}). {overview or plot}", the format behind the reference
    retrieval figures in shared/data/README.md:
      * body = overview if it is a non-empty string, else plot if non-empty, else "".
        (With an empty body the text keeps its trailing space: "Title (1999). ".)
      * when year is missing (absent or null) the prefix is just the title:
        f"{title}. {body}". In the current corpus every movie has a title and a year,
        so this branch is for robustness only.
      * a missing title is treated as "".
    """
    title = movie.get("title") or ""
    year = movie.get("year")
    body = movie.get("overview") or movie.get("plot") or ""
    if year is None or year == "":
        return f"{title}. {body}"
    return f"{title} ({year}). {body}"


def load_movies(path: str) -> Iterator[dict]:
    """Yield the movie objects of a movies.jsonl(.gz) file, in file order."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def percentile(values: Iterable[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default 'linear' method), q in [0, 100]."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of empty sequence")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_movies_path() -> str:
    base = os.environ.get("MARQUEE_SHARED_DATA") or os.path.join(
        os.path.dirname(REPO_ROOT), "shared", "data"
    )
    return os.path.join(base, "movies.jsonl.gz")


def run(
    model_dir: str,
    movies_path: str,
    n: int = 1024,
    batch: int = 32,
    max_len: int = 256,
    threads: int | None = None,
    single: int = SINGLE_DOCS,
) -> dict:
    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    threads = threads or default_threads()
    torch.set_num_threads(threads)

    docs = []
    for movie in load_movies(movies_path):
        docs.append(doc_text(movie))
        if len(docs) >= n:
            break
    if len(docs) < n:
        log(f"warning: only {len(docs)} movies in {movies_path}, wanted {n}")
    n = len(docs)

    log(f"loading {model_dir} (threads={threads}, max_len={max_len})")
    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = max_len
    model.eval()

    def encode(texts, bs):
        return model.encode(
            texts,
            batch_size=bs,
            convert_to_numpy=True,
            normalize_embeddings=False,  # the model's Normalize module already does it
            show_progress_bar=False,
        )

    with torch.inference_mode():
        log("warm-up: one batch")
        encode(docs[:batch], batch)

        log(f"throughput: {n} docs, batch {batch}")
        t0 = time.perf_counter()
        emb = encode(docs, batch)
        elapsed = time.perf_counter() - t0
        assert emb.shape == (n, 384), emb.shape
        docs_per_s = n / elapsed
        log(f"  {elapsed:.3f} s -> {docs_per_s:.1f} docs/s")

        k = min(single, n)
        log(f"single-document latency: {k} docs, one at a time")
        lat_ms = []
        for text in docs[:k]:
            t0 = time.perf_counter()
            encode([text], 1)
            lat_ms.append((time.perf_counter() - t0) * 1000.0)

    p50 = percentile(lat_ms, 50)
    p99 = percentile(lat_ms, 99)
    log(f"  p50 {p50:.2f} ms, p99 {p99:.2f} ms, mean {statistics.fmean(lat_ms):.2f} ms")

    return {
        "docs_per_s": round(docs_per_s, 2),
        "single_p50_ms": round(p50, 3),
        "single_p99_ms": round(p99, 3),
        "n": n,
        "batch": batch,
        "threads": threads,
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default=DEFAULT_MODEL_DIR)
    ap.add_argument("--movies", default=None, help="movies.jsonl.gz (default: $MARQUEE_SHARED_DATA/movies.jsonl.gz)")
    ap.add_argument("--n", type=int, default=1024, help="documents for the throughput run")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=256, help="max_seq_length (word pieces incl. [CLS]/[SEP])")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all usable cores)")
    args = ap.parse_args(argv)

    movies = args.movies or default_movies_path()
    if not os.path.isfile(movies):
        log(f"skipping: movies file not found: {movies} (pass --movies or set MARQUEE_SHARED_DATA)")
        return 2
    if not os.path.isfile(os.path.join(args.model_dir, "model.safetensors")):
        log(f"model not found in {args.model_dir}; run scripts/fetch-model.sh first")
        return 2

    result = run(args.model_dir, movies, n=args.n, batch=args.batch, max_len=args.max_len, threads=args.threads)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
