"""The peers of the GPU benchmark, run on the same GPU in the same call as Marquee:
torch.topk(q @ X.T) for batched exact search, and sentence-transformers for the BERT
embeddings (fp32 for parity on the same weights, fp16 for throughput). One JSON object
per line on stdout.

    python3 torch_peers.py --model DIR --texts TEXTS.jsonl --docs DOCS.jsonl \
        --marquee-embeddings DIR_WITH_emb_fp32.json_AND_emb_bf16.json [--device cuda]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def timed(fn, device, rounds):
    """Median seconds of `rounds` runs after two warm-ups."""
    for _ in range(2):
        fn()
    runs = []
    for _ in range(rounds):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def topk_peer(device, rows, dim):
    gen = torch.Generator(device=device).manual_seed(0)
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        corpus = torch.nn.functional.normalize(
            torch.randn(rows, dim, device=device, generator=gen), dim=1
        ).to(dtype)
        queries = corpus[:1024] * 0.9
        for k in (10, 100):
            seconds = timed(lambda: torch.topk(queries @ corpus.T, k, dim=1), device, 5)
            print(json.dumps({"peer": "torch_topk", "precision": name, "rows": rows,
                              "queries": 1024, "k": k, "seconds": seconds}))
        del corpus, queries
        if device == "cuda":
            torch.cuda.empty_cache()


def read_texts(path):
    return [json.loads(line)["text"] for line in open(path) if line.strip()]


def st_peer(device, model_dir, texts_path, docs_path, marquee_dir):
    from sentence_transformers import SentenceTransformer

    texts, docs = read_texts(texts_path), read_texts(docs_path)
    model = SentenceTransformer(str(model_dir), device=device)
    model.max_seq_length = 256
    reference = model.encode(texts, batch_size=256, convert_to_tensor=True,
                             normalize_embeddings=False).float()
    for precision in ("fp32", "bf16"):
        path = Path(marquee_dir) / f"emb_{precision}.json"
        if not path.exists():
            continue
        ours = torch.tensor(json.loads(path.read_text()), device=reference.device)
        cosine = torch.nn.functional.cosine_similarity(ours, reference, dim=1)
        print(json.dumps({"check": "bert_vs_sentence_transformers", "precision": precision,
                          "texts": len(texts), "min_cosine": cosine.min().item(),
                          "max_abs_diff": (ours - reference).abs().max().item()}))
    if device == "cuda":
        model = model.half()
    seconds = timed(lambda: model.encode(docs, batch_size=256), device, 5)
    print(json.dumps({"peer": "sentence_transformers", "precision": "fp16" if device == "cuda" else "fp32",
                      "texts": len(docs), "batch": 256, "seconds": seconds,
                      "docs_per_s": len(docs) / seconds}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--texts", required=True)
    parser.add_argument("--docs", required=True)
    parser.add_argument("--marquee-embeddings", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    topk_peer(args.device, args.rows, 384)
    st_peer(args.device, args.model, args.texts, args.docs, args.marquee_embeddings)


if __name__ == "__main__":
    main()
