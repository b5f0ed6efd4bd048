#!/usr/bin/env python3
"""Generation speed: Marquee's Qwen2.5-VL decoder against transformers and llama.cpp on the same
random checkpoint shaped like Qwen2.5-0.5B, with the same thread count, in one run.

    PYTHONPATH=/work/pydeps-gen-bench python3 benchmarks/generation_bench.py [--threads 2]

Needs: `cargo build --release -p marquee-bench` (and, for the gRPC part, `-p marquee-server
-p marquee-qwen2-vl`); /work/venv's torch and transformers; llama-cpp-python and sentencepiece
installed with `pip install --target` into a folder on PYTHONPATH (see the README).

What it does:
1. makes the checkpoint if it is missing (`qwen_checkpoint.py`, under benchmarks/.cache/): the
   Qwen2.5-VL directory (f32 safetensors, Qwen2's real tokenizer), its text weights as a
   `Qwen2ForCausalLM` and the GGUF f32 / f16 conversions by llama.cpp's own converter;
2. draws the prompt (seeded random ids of the BPE vocabulary, `--prompt-tokens` long);
3. runs each system in a process of its own, one after the other: Marquee in-process
   (`marquee-bench generate`) then llama.cpp f32, Marquee on the bf16 copy of the checkpoint
   (its linear weights kept 16-bit) then llama.cpp f16 (`generation_peers.py`), then
   transformers on the CPU: prompt processing tokens/s and time to first token on the whole
   prompt, then greedy decode at batch 1 (`--new-tokens` after the prompt's first
   `--decode-prompt-tokens` ids, end tokens ignored): time to first token and tokens/s;
   with `--rounds N`, N times over, each system's median reported and each decode target
   judged on the median of its rounds' ratios (this VM's memory bandwidth moves from
   minute to minute, and a round's ratio compares runs made seconds apart);
4. [gRPC] aggregate tokens/s at 1 / 4 / 8 / 16 concurrent `GenerationService.GenerateStream`
   streams against a release `marquee-server` serving the checkpoint, then its bf16 copy; reported as missing when
   the server or the service is not there;
5. prints a table with Marquee ÷ peer ratios and writes the raw figures to
   benchmarks/results/generation.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import qwen_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RELEASE = os.path.join(REPO, "target", "release")
PROTO_DIR = os.path.join(REPO, "proto")
PROMPT_SEED = 20261206
# The decode target of the issue, Marquee ÷ peer at batch 1.
# Decode targets, per Marquee side: (peer, ratio). The bf16 checkpoint's peer at the same
# precision is llama.cpp f16 (16-bit weights).
TARGETS = {
    "marquee": [("llama.cpp f32", 1.0), ("transformers", 3.0)],
    "marquee bf16": [("llama.cpp f16", 1.0), ("transformers", 3.0)],
}
STREAMS_TARGET = 4.0


def exe(name: str) -> str:
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    return os.path.join(target, "release", name)


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def prompt_ids(n: int) -> list[int]:
    import random

    rng = random.Random(PROMPT_SEED)
    return [rng.randrange(qwen_checkpoint.FIRST_ADDED) for _ in range(n)]


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    return f"{os.cpu_count()} vCPU {model}"


def peer_env(threads: int) -> dict:
    """Every side gets the same threads, whatever its runtime reads."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "RAYON_NUM_THREADS": str(threads)}


def in_process(paths, ids_file: str, args) -> list[dict]:
    common = ["--prompt-ids", ids_file, "--decode-prompt-tokens", str(args.decode_prompt_tokens),
              "--new-tokens", str(args.new_tokens), "--threads", str(args.threads)]
    peers = os.path.join(HERE, "generation_peers.py")
    # Each Marquee side next to its same-precision peer: a round's ratio compares runs made
    # seconds apart.
    systems = {
        "marquee": [exe("marquee-bench"), "generate", "--model", str(paths.vl), *common],
        "llama.cpp f32": [sys.executable, peers, "llama-cpp", "--model", str(paths.gguf["f32"]),
                          "--label", "llama.cpp f32", *common],
        "marquee bf16": [exe("marquee-bench"), "generate", "--model", str(paths.vl_bf16), *common],
        "llama.cpp f16": [sys.executable, peers, "llama-cpp", "--model", str(paths.gguf["f16"]),
                          "--label", "llama.cpp f16", *common],
        "transformers": [sys.executable, peers, "transformers", "--model", str(paths.vl), *common],
    }
    rounds: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for name, cmd in systems.items():
            if args.only and name not in args.only:
                continue
            try:
                report = run_json(cmd, env=peer_env(args.threads))
            except (subprocess.CalledProcessError, json.JSONDecodeError, IndexError) as e:
                report = {"missing": f"{type(e).__name__}: {e}"}
            rounds.setdefault(name, []).append({**report, "system": name})
    return [median_report(runs) for runs in rounds.values()]


def median_report(runs: list[dict]) -> dict:
    """One system's rounds as one report: the decode of its median round by decode tokens/s,
    the prefill of its median round by prompt tokens/s, and every round's two figures."""
    done = [r for r in runs if "missing" not in r]
    if not done:
        return runs[0]
    by = lambda part: sorted(done, key=lambda r: r[part]["tokens_per_s"])[(len(done) - 1) // 2]  # noqa: E731
    return {**by("decode"), "prefill": by("prefill")["prefill"],
            "rounds": [{"decode_tokens_per_s": r["decode"]["tokens_per_s"],
                        "prompt_tokens_per_s": r["prefill"]["tokens_per_s"]} for r in done]}


# --- gRPC: aggregate tokens/s over concurrent GenerateStream streams -------------------------
# Hook for the served path: it is written against proto/marquee/v1/generation.proto and reports
# itself missing (never fails the run) while the server cannot serve the checkpoint.

def generation_stubs(out_dir: str):
    """Python stubs of marquee.v1's generation.proto, made with grpcio-tools."""
    from grpc_tools import protoc

    protos = [os.path.join("marquee", "v1", f) for f in os.listdir(os.path.join(PROTO_DIR, "marquee", "v1"))
              if f.endswith(".proto")]
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
                      *protos])
    if rc != 0:
        raise RuntimeError(f"protoc failed ({rc})")
    sys.path.insert(0, out_dir)
    from marquee.v1 import generation_pb2, generation_pb2_grpc

    return generation_pb2, generation_pb2_grpc


@contextlib.contextmanager
def generation_server(model_dir: str, work: str, threads: int):
    log_path = os.path.join(work, "server.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [exe("marquee-server"), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
             "--data-dir", work, "--model", f"qwen={model_dir}"],
            stdout=subprocess.PIPE, stderr=log, text=True, env=peer_env(threads))
        try:
            line = proc.stdout.readline()
            addr = next((w.split("=", 1)[1] for w in line.split() if w.startswith("grpc=")), None)
            if addr is None:
                raise RuntimeError(f"the server did not start ({line.strip()!r}); see {log_path}")
            yield addr
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def stream_sweep(addr: str, pb, pb_grpc, args) -> list[dict]:
    import grpc

    channel = grpc.insecure_channel(addr)
    stub = pb_grpc.GenerationServiceStub(channel)
    params = pb.GenerationParameters(max_new_tokens=args.grpc_new_tokens,
                                     min_new_tokens=args.grpc_new_tokens, temperature=0.0)
    text = "Describe the film you remember: a poster, a red house by a blue lake, mountains."

    def request():
        return pb.GenerateRequest(model="qwen", parameters=params, chat=pb.ChatInput(messages=[
            pb.ChatMessage(role="user", content=[pb.ContentPart(text=text)])]))

    def one_stream(counts: list, errors: list):
        try:
            for _ in range(args.grpc_requests_per_stream):
                tokens = 0
                for message in stub.GenerateStream(request(), timeout=600):
                    if message.HasField("delta"):
                        tokens += len(message.delta.tokens)
                    elif message.HasField("result"):
                        tokens = message.result.usage.completion_tokens or tokens
                counts.append(tokens)
        except grpc.RpcError as e:
            errors.append(f"{e.code().name}: {e.details()}")

    # One unmeasured stream: the service exists, and the weights are in memory.
    errors: list = []
    one_stream([], errors)
    if errors:
        raise RuntimeError(errors[0])
    steps = []
    for streams in args.streams:
        counts, errors = [], []
        workers = [threading.Thread(target=one_stream, args=(counts, errors)) for _ in range(streams)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        seconds = time.perf_counter() - start
        steps.append({"streams": streams, "requests": len(counts), "tokens": sum(counts),
                      "seconds": seconds, "tokens_per_s": sum(counts) / seconds,
                      "errors": errors[:3]})
    return steps


def grpc_part(paths, args) -> dict:
    """The stream sweep against a server of each checkpoint: {"f32": ..., "bf16": ...}."""
    if not os.path.exists(exe("marquee-server")):
        return {"missing": f"{exe('marquee-server')} is not built"}
    served = {}
    for name, model_dir in (("f32", paths.vl), ("bf16", paths.vl_bf16)):
        try:
            with tempfile.TemporaryDirectory() as work:
                pb, pb_grpc = generation_stubs(work)
                with generation_server(str(model_dir), work, args.threads) as addr:
                    served[name] = {"steps": stream_sweep(addr, pb, pb_grpc, args)}
        except Exception as e:  # noqa: BLE001 (the served path is reported, never fatal)
            served[name] = {"missing": f"{type(e).__name__}: {e}"}
    return served


# --- report -----------------------------------------------------------------------------------

def agreement(a: list[int], b: list[int]) -> int:
    """Leading greedy tokens two systems share (same weights: equal until a near-tie)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def decode_ratio(side: dict, peer: dict) -> tuple[float, list[float]]:
    """side ÷ peer decode tokens/s: with rounds, the median of each round's ratio (and
    those ratios), else the one run's."""
    a, b = side.get("rounds"), peer.get("rounds")
    if a and b and len(a) == len(b) and len(a) > 1:
        per_round = [x["decode_tokens_per_s"] / y["decode_tokens_per_s"] for x, y in zip(a, b)]
        return statistics.median(per_round), per_round
    return side["decode"]["tokens_per_s"] / peer["decode"]["tokens_per_s"], []


def print_report(reports: list[dict], served: dict, args) -> None:
    ours = next((r for r in reports if r["system"] == "marquee" and "missing" not in r), None)
    print(f"\nGeneration, random Qwen2.5-0.5B-shaped checkpoint, {args.threads} threads, {machine()}")
    print(f"prompt {args.prompt_tokens} tokens; decode {args.new_tokens} new tokens after "
          f"{args.decode_prompt_tokens}, batch 1, greedy\n")
    head = (f"{'system':<15} {'decode tok/s':>12} {'÷':>6} {'prompt tok/s':>12} {'÷':>6} "
            f"{'TTFT ms':>9} {'TTFT@prompt ms':>15} {'same tokens':>11}")
    print(head)
    print("-" * len(head))
    for r in reports:
        if "missing" in r:
            print(f"{r['system']:<15} missing: {r['missing'][:90]}")
            continue
        d, p = r["decode"], r["prefill"]
        ratio = lambda key, part: (ours[part][key] / r[part][key]) if ours else float("nan")  # noqa: E731
        same = agreement(ours["decode"]["tokens"], d["tokens"]) if ours else 0
        print(f"{r['system']:<15} {d['tokens_per_s']:>12.2f} {ratio('tokens_per_s', 'decode'):>6.2f} "
              f"{p['tokens_per_s']:>12.1f} {ratio('tokens_per_s', 'prefill'):>6.2f} "
              f"{d['time_to_first_token_ms']:>9.1f} {p['time_to_first_token_ms']:>15.1f} "
              f"{same:>6}/{len(d['tokens'])}")
    print("\n÷ = Marquee ÷ system (above 1: Marquee is faster)")
    if args.rounds > 1:
        print(f"medians of {args.rounds} rounds, systems alternating; decode tok/s per round:")
        for r in reports:
            if "rounds" in r:
                print(f"  {r['system']:<15} " + " ".join(f"{x['decode_tokens_per_s']:.2f}" for x in r["rounds"]))
    done = {r["system"]: r for r in reports if "missing" not in r}
    for side, targets in TARGETS.items():
        for peer, want in targets:
            if side in done and peer in done:
                got, per_round = decode_ratio(done[side], done[peer])
                rounds = f" (median of rounds: {' '.join(f'{x:.2f}' for x in per_round)})" if per_round else ""
                print(f"target {side} decode ≥ {want:.1f}× {peer}: {got:.2f}× "
                      f"{'met' if got >= want else 'NOT met'}{rounds}")
    if "missing" in served:
        print(f"\ngRPC streams: missing ({served['missing'][:200]})")
        return
    for checkpoint, sweep in served.items():
        if "missing" in sweep:
            print(f"\ngRPC streams, {checkpoint} checkpoint: missing ({sweep['missing'][:200]})")
            continue
        print(f"\ngRPC GenerateStream, aggregate, {checkpoint} checkpoint")
        for s in sweep["steps"]:
            print(f"  {s['streams']:>3} streams: {s['tokens_per_s']:8.2f} tok/s "
                  f"({s['tokens']} tokens in {s['seconds']:.1f} s{', errors' if s['errors'] else ''})")
        by = {s["streams"]: s["tokens_per_s"] for s in sweep["steps"]}
        if 1 in by and 8 in by and by[1] > 0:
            got = by[8] / by[1]
            print(f"target 8 streams ≥ {STREAMS_TARGET:.0f}× one stream: {got:.2f}× "
                  f"{'met' if got >= STREAMS_TARGET else 'NOT met'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--decode-prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=1,
                   help="in-process rounds, systems alternating; each system's median is reported")
    p.add_argument("--only", nargs="*", help="systems to run (default: all): marquee, transformers, "
                   "'llama.cpp f32', 'llama.cpp f16'")
    p.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16])
    p.add_argument("--grpc-new-tokens", type=int, default=64)
    p.add_argument("--grpc-requests-per-stream", type=int, default=2)
    p.add_argument("--no-grpc", action="store_true", help="skip the gRPC streams")
    p.add_argument("--out", default=os.path.join(HERE, "results", "generation.json"))
    args = p.parse_args()

    paths = qwen_checkpoint.ensure()
    ids = prompt_ids(args.prompt_tokens)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(ids, f)
        ids_file = f.name
    try:
        reports = in_process(paths, ids_file, args)
    finally:
        os.unlink(ids_file)
    served = {"missing": "skipped (--no-grpc)"} if args.no_grpc else grpc_part(paths, args)
    print_report(reports, served, args)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(),
            "threads": args.threads,
            "checkpoint": {"dir": str(paths.vl), "text": qwen_checkpoint.TEXT,
                           "gguf": {k: str(v) for k, v in paths.gguf.items()}},
            "prompt_tokens": args.prompt_tokens,
            "decode_prompt_tokens": args.decode_prompt_tokens,
            "new_tokens": args.new_tokens,
            "rounds": args.rounds,
            "in_process": reports,
            "grpc_streams": served,
        }, f, indent=2)
    print(f"\nraw figures: {args.out}")


if __name__ == "__main__":
    main()
