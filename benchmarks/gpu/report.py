"""Reads the JSON lines written by run.sh and prints one Markdown table of the GPU
figures against the issue's targets (the table that goes into benchmarks/RESULTS.md).

    python3 report.py FILE.jsonl...
"""

import json
import sys


def main():
    rows = []
    for path in sys.argv[1:]:
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))

    def find(**want):
        return [r for r in rows if all(r.get(k) == v for k, v in want.items())]

    out = ["| figure | measured | target | met |", "|---|---|---|---|"]

    def line(figure, measured, target, met):
        out.append(f"| {figure} | {measured} | {target} | {'yes' if met else 'NO'} |")

    probe = next((r for r in rows if set(r) <= {"device", "reason"}), {})
    device = probe.get("device")
    if not device:
        print("no usable GPU:", probe.get("reason", "gpu_check did not run"))
        return
    checks = [r for r in rows if "rel_err" in r]
    for precision in ("F32", "Bf16"):
        mine = [r for r in checks if r.get("precision") == precision]
        if mine:
            worst = max(r["rel_err"] for r in mine)
            limit = mine[0]["limit"]
            line(f"kernel parity {precision} ({len(mine)} checks), worst rel. error",
                 f"{worst:.2e}", f"≤ {limit:g}", all(r["ok"] for r in mine))
    topk = [r for r in rows if r.get("check", "").startswith("top_k")]
    if topk:
        line(f"top-K vs CPU ({len(topk)} cases: ids identical fp32, recall bf16)",
             f"{sum(r['ok'] for r in topk)}/{len(topk)} pass", "all", all(r["ok"] for r in topk))
    exact = [r for r in rows if r.get("check", "").split(" ")[0] in ("kv_cache_write", "argmax", "sample")]
    if exact:
        line(f"decoder exact checks ({len(exact)}: KV cache writes, argmax ids, sampled tokens vs CPU)",
             f"{sum(r['ok'] for r in exact)}/{len(exact)} pass", "all", all(r["ok"] for r in exact))
    copy = find(bench="copy_d2d")
    copy_gbs = copy[0]["gb_per_s"] if copy else float("nan")
    line("device-to-device copy (ceiling)", f"{copy_gbs:.0f} GB/s", "", True)
    for r in find(bench="cublas_bf16_gemm"):
        line("cuBLAS bf16 GEMM 8192³ (ceiling)", f"{r['tflops']:.0f} TFLOP/s", "", True)
    for r in find(bench="mean_pool_l2"):
        line(f"mean pool + L2 {r['precision']}", f"{r['gb_per_s']:.0f} GB/s = {r['of_copy']:.0%} of copy",
             "≥ 70% of copy", r["of_copy"] >= 0.7)
    for r in find(bench="topk_single_query"):
        line(f"top-10, 1 query × 1M × 384 {r['precision']}",
             f"{r['seconds'] * 1e3:.3f} ms, {r['gb_per_s']:.0f} GB/s = {r['of_copy']:.0%} of copy",
             "≥ 60% of copy (bf16)", r["of_copy"] >= 0.6 or r["precision"] != "bf16")
    for r in find(bench="topk_batch"):
        peer = find(peer="torch_topk", precision=r["precision"], k=r["k"])
        if peer:
            ratio = peer[0]["seconds"] / r["seconds"]
            line(f"top-{r['k']}, 1,024 queries × 1M {r['precision']} vs torch.topk(q @ X.T)",
                 f"{r['seconds'] * 1e3:.2f} ms vs {peer[0]['seconds'] * 1e3:.2f} ms = {ratio:.2f}×",
                 "≥ 2×", ratio >= 2)
    for r in find(check="bert_vs_sentence_transformers"):
        target = 0.9999 if r["precision"] == "fp32" else 0.999
        line(f"BERT on GPU {r['precision']} vs sentence-transformers, min cosine ({r['texts']} texts)",
             f"{r['min_cosine']:.6f}", f"≥ {target}", r["min_cosine"] >= target)
    st = find(peer="sentence_transformers")
    for r in find(bench="bert_embed"):
        if r["texts"] < 1000 or not st:
            continue
        ratio = r["docs_per_s"] / st[0]["docs_per_s"]
        line(f"BERT embed {r['precision']}, {r['texts']} docs, batch {r['batch']} vs ST {st[0]['precision']}",
             f"{r['docs_per_s']:.0f} vs {st[0]['docs_per_s']:.0f} docs/s = {ratio:.2f}×", "≥ 1.5×", ratio >= 1.5)
    print(f"GPU: {device}\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
