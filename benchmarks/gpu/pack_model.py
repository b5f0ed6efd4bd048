"""Packs a Hugging Face model directory for the trip to the GPU host, and unpacks it there.

The device tool carries at most 64 MiB a call and MiniLM's f32 weights are 87 MiB, so
`pack` stores every floating-point tensor as f16 (44 MiB) next to the other files, and
`unpack` turns them back into f32. Marquee and sentence-transformers then both load the
unpacked directory: the very same (f16-representable) weights on both sides.

    python3 pack_model.py pack   MODEL_DIR PACKED_DIR
    python3 pack_model.py unpack PACKED_DIR MODEL_DIR
"""

import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def convert(src: Path, dst: Path, dtype) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "onnx", "openvino"))
    for weights in src.rglob("*.safetensors"):
        tensors = load_file(weights)
        out = {
            name: (t.astype(dtype) if np.issubdtype(t.dtype, np.floating) else t)
            for name, t in tensors.items()
        }
        target = dst / weights.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file(out, target)


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[1] not in ("pack", "unpack"):
        sys.exit(__doc__)
    mode, src, dst = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    convert(src, dst, np.float16 if mode == "pack" else np.float32)
    print(f"{mode}ed {src} -> {dst}")


if __name__ == "__main__":
    main()
