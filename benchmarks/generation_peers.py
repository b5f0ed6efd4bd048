"""The generation benchmark's peers, each run in a process of its own by `generation_bench.py`
and printing one JSON object shaped as `marquee-bench generate` prints it:

    python generation_peers.py transformers --model DIR --prompt-ids FILE [...]
    python generation_peers.py llama-cpp --model FILE.gguf --prompt-ids FILE [...]

Both runs of each peer are greedy with end tokens ignored: a prefill of the whole prompt to its
first token (prompt tokens/s, time to first token) and a decode of `--new-tokens` tokens after
the first `--decode-prompt-tokens` ids (time to first token, then tokens/s over the others).
Time stamps are taken as each token is chosen: in transformers by a logits processor (called once
per step, right after the forward pass), in llama.cpp as `Llama.generate` yields.
"""

import argparse
import json
import time


def transformers_runs(args, ids):
    import torch
    import transformers
    from transformers import LogitsProcessor, LogitsProcessorList, Qwen2_5_VLForConditionalGeneration

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval()
    load_s = time.perf_counter() - start
    # End tokens ignored: no EOS, so every run generates exactly its new tokens.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 151643

    class Stamps(LogitsProcessor):
        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores):
            self.times.append(time.perf_counter())
            return scores

    def generate(prompt, new_tokens):
        stamps = Stamps()
        input_ids = torch.tensor([prompt], dtype=torch.long)
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                max_new_tokens=new_tokens, do_sample=False,
                logits_processor=LogitsProcessorList([stamps]),
            )
        tokens = out[0, len(prompt):].tolist()
        return [stamps.times[0] - t0] + [b - a for a, b in zip(stamps.times, stamps.times[1:])], tokens

    return f"transformers {transformers.__version__} (torch {torch.__version__})", load_s, generate


def llama_cpp_runs(args, ids):
    import llama_cpp

    start = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=args.model, n_ctx=len(ids) + args.new_tokens + 16, n_batch=512, n_ubatch=512,
        n_threads=args.threads, n_threads_batch=args.threads, seed=0, verbose=False,
    )
    load_s = time.perf_counter() - start

    def generate(prompt, new_tokens):
        llm.reset()
        times, tokens = [], []
        t0 = time.perf_counter()
        for token in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0,
                                  repeat_penalty=1.0, reset=True):
            times.append(time.perf_counter())
            tokens.append(token)
            if len(tokens) == new_tokens:
                break
        return [times[0] - t0] + [b - a for a, b in zip(times, times[1:])], tokens

    return f"llama.cpp via llama-cpp-python {llama_cpp.__version__}", load_s, generate


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("peer", choices=["transformers", "llama-cpp"])
    p.add_argument("--model", required=True, help="model directory (transformers) or GGUF file")
    p.add_argument("--prompt-ids", required=True, help="JSON array of the prompt's token ids")
    p.add_argument("--decode-prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--label", help="system name in the report (default: the peer)")
    args = p.parse_args()
    with open(args.prompt_ids) as f:
        ids = json.load(f)
    runs = transformers_runs if args.peer == "transformers" else llama_cpp_runs
    version, load_s, generate = runs(args, ids)
    decode_prompt = ids[: args.decode_prompt_tokens]
    generate(decode_prompt, 4)  # warm-up: weights into memory, lazy initialisation
    prefill, _ = generate(ids, 1)
    steps, tokens = generate(decode_prompt, args.new_tokens)
    decode_s = sum(steps[1:])
    print(json.dumps({
        "system": args.label or args.peer,
        "version": version,
        "model": args.model,
        "threads": args.threads,
        "load_s": load_s,
        "prefill": {
            "prompt_tokens": len(ids),
            "seconds": prefill[0],
            "tokens_per_s": len(ids) / prefill[0],
            "time_to_first_token_ms": prefill[0] * 1e3,
        },
        "decode": {
            "prompt_tokens": len(decode_prompt),
            "new_tokens": len(tokens),
            "time_to_first_token_ms": steps[0] * 1e3,
            "seconds": decode_s,
            "tokens_per_s": (len(tokens) - 1) / decode_s,
            "tokens": tokens,
        },
    }))


if __name__ == "__main__":
    main()
