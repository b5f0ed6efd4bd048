#!/usr/bin/env python3
"""ResNet-50 image encoding: Marquee's resnet-poster plugin against torchvision, in
process, same batch, same threads, same random weights.

Usage (from the repo root; needs torch, torchvision, safetensors, pillow, numpy):

    python3 benchmarks/resnet_bench.py [--batch 8] [--threads 2] [--reps 5] [--rounds 3]
                                       [--posters 64] [--shared-data ../shared/data]

What it does:

1. Builds torchvision's resnet50() with random weights and random, non-trivial batch-norm
   statistics (eval mode), and writes it with a config.json to /tmp/marquee-resnet50/
   (never committed: 100 MB).
2. Network: one random [batch, 3, 224, 224] input. torchvision runs the model up to the
   pooled features (fc replaced by Identity) under torch.inference_mode() with
   torch.set_num_threads(threads); the plugin runs through
   `cargo run --release -p marquee-resnet-poster --example resnet_bench` with the same
   thread count. Each side warms up once, then times `reps` batches; the best of
   `rounds` alternating rounds is reported (the machine is shared).
3. Full pipeline (with --posters N > 0 and the shared data present): the first N poster
   files, torchvision as PIL open -> convert("RGB") -> Resize(256) -> CenterCrop(224) ->
   ToTensor -> Normalize -> model, against the plugin from the encoded bytes.
4. Agreement: the relative error max |ours - torchvision| / max |torchvision| per image,
   its maximum over the batch reported (network: identical inputs; pipeline: the same
   bytes, which the plugin decodes to Pillow's pixels bit for bit, JPEG included).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from torchvision import transforms
from torchvision.models import resnet50

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = "/tmp/marquee-resnet50"


def random_resnet50():
    torch.manual_seed(0)
    model = resnet50()
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
    return model.eval()


def relative_errors(ours, theirs):
    scale = np.abs(theirs).max(axis=1)
    return np.abs(ours - theirs).max(axis=1) / scale


def time_torch(model, batches, reps):
    """Seconds for `reps` passes over `batches` (after one warm-up pass), and the outputs."""
    with torch.inference_mode():
        outputs = [model(b) for b in batches]
        start = time.perf_counter()
        for _ in range(reps):
            outputs = [model(b) for b in batches]
        return time.perf_counter() - start, torch.cat(outputs).numpy()


def run_marquee(threads, reps, image_list=None):
    cmd = [
        "cargo", "run", "--quiet", "--release", "-p", "marquee-resnet-poster",
        "--example", "resnet_bench", "--",
        WORK, f"{WORK}/input.safetensors", str(threads), str(reps), f"{WORK}/features.bin",
    ]
    if image_list:
        cmd.append(image_list)
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    features = np.fromfile(f"{WORK}/features.bin", dtype="<f4").reshape(-1, report["dim"])
    return report, features


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--posters", type=int, default=64)
    parser.add_argument(
        "--shared-data",
        default=os.environ.get("MARQUEE_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data")),
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(WORK, exist_ok=True)

    model = random_resnet50()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        f"{WORK}/model.safetensors",
    )
    with open(f"{WORK}/config.json", "w") as f:
        json.dump({"architecture": "resnet50"}, f)
    model.fc = nn.Identity()
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    save_file({"input": x}, f"{WORK}/input.safetensors")
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "-p", "marquee-resnet-poster",
         "--example", "resnet_bench"],
        cwd=ROOT, check=True,
    )

    posters = []
    poster_dir = os.path.join(args.shared_data, "posters")
    if args.posters > 0 and os.path.isdir(poster_dir):
        posters = sorted(os.path.join(poster_dir, p) for p in os.listdir(poster_dir))
        posters = posters[: args.posters]
        with open(f"{WORK}/posters.txt", "w") as f:
            f.write("\n".join(posters) + "\n")
    elif args.posters > 0:
        print(f"no posters under {poster_dir}: skipping the full pipeline", file=sys.stderr)

    torch_best = ours_best = None
    for _ in range(args.rounds):
        seconds, theirs = time_torch(model, [x], args.reps)
        torch_best = seconds if torch_best is None else min(torch_best, seconds)
        report, ours = run_marquee(args.threads, args.reps)
        s = report["network_seconds"]
        ours_best = s if ours_best is None else min(ours_best, s)
    images = args.batch * args.reps
    torch_ips, ours_ips = images / torch_best, images / ours_best
    errors = relative_errors(ours[: args.batch], theirs)
    print(f"ResNet-50 network, batch {args.batch}, {args.threads} threads, {args.reps} reps, "
          f"best of {args.rounds}:")
    print(f"  torchvision {torch.__version__} / {__import__('torchvision').__version__}: "
          f"{torch_ips:.2f} images/s")
    print(f"  marquee resnet-poster: {ours_ips:.2f} images/s "
          f"(load {report['load_seconds']:.2f} s)")
    print(f"  ratio marquee / torchvision: {ours_ips / torch_ips:.2f}x")
    print(f"  features: {ours.shape[1]} per image, max relative error {errors.max():.2e}")

    if posters:
        preprocess = transforms.Compose([
            transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])
        with torch.inference_mode():
            model(x)  # warm-up
            start = time.perf_counter()
            outputs = []
            for i in range(0, len(posters), args.batch):
                batch = [preprocess(Image.open(p).convert("RGB")) for p in posters[i : i + args.batch]]
                outputs.append(model(torch.stack(batch)))
            torch_seconds = time.perf_counter() - start
        theirs = torch.cat(outputs).numpy()
        report, ours = run_marquee(args.threads, 1, f"{WORK}/posters.txt")
        ours = ours[args.batch :]
        errors = relative_errors(ours, theirs)
        n = len(posters)
        torch_ips, ours_ips = n / torch_seconds, n / report["pipeline"]["seconds"]
        print(f"Full pipeline on {n} real posters (decode, resize, crop, normalise, network):")
        print(f"  torchvision + PIL: {torch_ips:.2f} images/s")
        print(f"  marquee resnet-poster: {ours_ips:.2f} images/s")
        print(f"  ratio marquee / torchvision: {ours_ips / torch_ips:.2f}x")
        print(f"  features: max relative error {errors.max():.2e}, median {np.median(errors):.2e}")


if __name__ == "__main__":
    main()
