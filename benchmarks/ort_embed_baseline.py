#!/usr/bin/env python3
"""In-process ONNX Runtime baseline for document embedding, the peer of
`st_embed_baseline.py` with the same documents and the same JSON output.

The model is exported here with `torch.onnx` (the TorchScript exporter: BERT, then mean
pooling over the attention mask and L2 normalisation inside the graph, so the session
returns the sentence embedding), then served by an `onnxruntime.InferenceSession` with
every graph optimisation on and `intra_op_num_threads` = the usable cores.

  (a) throughput: the first N documents sorted by length (characters, as
      sentence-transformers sorts its own), in batches of BATCH padded to the batch's
      longest -> docs/s
  (b) single-document latency: 200 documents one at a time, in corpus order -> p50 / p99

Usage:

    python3 benchmarks/ort_embed_baseline.py --model-dir data/models/all-MiniLM-L6-v2 \
        --movies ../shared/data/movies.jsonl.gz [--n 1024] [--batch 32] [--max-len 256] \
        [--threads N] [--onnx PATH]

--onnx is where the exported graph is kept (default: benchmarks/.cache/MODEL.onnx, made
when absent). Prints one JSON object on stdout; logs go to stderr. Checks the exported
graph against sentence-transformers' embeddings before timing (cosine >= 0.99999).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from st_embed_baseline import (DEFAULT_MODEL_DIR, REPO_ROOT, SINGLE_DOCS, default_movies_path,
                               default_threads, doc_text, load_movies, log, percentile)


def export(model_dir: str, path: str) -> None:
    """Exports BERT + mean pooling + L2 normalisation to an ONNX file at `path`."""
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(model_dir).eval()

    class SentenceEncoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            states = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    ids = torch.ones(2, 16, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with torch.inference_mode():
        torch.onnx.export(SentenceEncoder(bert), (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                          path, input_names=names, output_names=["embedding"],
                          dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names},
                          opset_version=17, dynamo=False)


def run(model_dir: str, movies_path: str, onnx_path: str, n: int = 1024, batch: int = 32,
        max_len: int = 256, threads: int | None = None, single: int = SINGLE_DOCS) -> dict:
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    threads = threads or default_threads()
    if not os.path.isfile(onnx_path):
        log(f"exporting {model_dir} to {onnx_path}")
        export(model_dir, onnx_path)

    docs = []
    for movie in load_movies(movies_path):
        docs.append(doc_text(movie))
        if len(docs) >= n:
            break
    n = len(docs)

    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tokenizer.enable_truncation(max_len)
    tokenizer.no_padding()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])

    def encode(texts: list[str]) -> np.ndarray:
        encodings = tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        return session.run(None, {"input_ids": ids, "attention_mask": mask,
                                  "token_type_ids": np.zeros_like(ids)})[0]

    def encode_sorted(texts: list[str]) -> np.ndarray:
        """Batches of texts sorted longest first by characters, results back in input
        order (sentence-transformers' way)."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), session.get_outputs()[0].shape[1] or 384), dtype=np.float32)
        for start in range(0, len(texts), batch):
            rows = order[start:start + batch]
            out[rows] = encode([texts[i] for i in rows])
        return out

    check = encode(docs[:8])
    reference = reference_embeddings(model_dir, docs[:8], max_len)
    cosine = float((check * reference).sum(1).min())
    if cosine < 0.99999:
        sys.exit(f"the exported graph disagrees with sentence-transformers: cosine {cosine}")

    encode_sorted(docs[:batch])  # warm-up
    t0 = time.perf_counter()
    emb = encode_sorted(docs)
    elapsed = time.perf_counter() - t0
    assert emb.shape[0] == n
    docs_per_s = n / elapsed
    log(f"onnxruntime throughput: {n} docs in {elapsed:.3f} s -> {docs_per_s:.1f} docs/s")

    lat_ms = []
    for text in docs[:min(single, n)]:
        t0 = time.perf_counter()
        encode([text])
        lat_ms.append((time.perf_counter() - t0) * 1000.0)
    p50, p99 = percentile(lat_ms, 50), percentile(lat_ms, 99)
    log(f"onnxruntime single document: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    return {
        "docs_per_s": round(docs_per_s, 2),
        "single_p50_ms": round(p50, 3),
        "single_p99_ms": round(p99, 3),
        "n": n,
        "batch": batch,
        "threads": threads,
        "onnxruntime": ort.__version__,
        "min_cosine_to_sentence_transformers": round(cosine, 7),
    }


def reference_embeddings(model_dir: str, texts: list[str], max_len: int):
    """sentence-transformers' embeddings of `texts`, to check the exported graph."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = max_len
    return model.encode(texts, convert_to_numpy=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default=DEFAULT_MODEL_DIR)
    ap.add_argument("--movies", default=None)
    ap.add_argument("--onnx", default=None, help="exported graph (default: benchmarks/.cache/MODEL.onnx)")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    movies = args.movies or default_movies_path()
    if not os.path.isfile(movies):
        log(f"skipping: movies file not found: {movies}")
        return 2
    onnx_path = args.onnx or os.path.join(REPO_ROOT, "benchmarks", ".cache",
                                          os.path.basename(os.path.normpath(args.model_dir)) + ".onnx")
    print(json.dumps(run(args.model_dir, movies, onnx_path, n=args.n, batch=args.batch,
                         max_len=args.max_len, threads=args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
