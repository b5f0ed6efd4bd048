#!/usr/bin/env python3
"""Random weights for the multimodal end-to-end run (benchmarks/multimodal_e2e.py).

Usage: python3 benchmarks/make_multimodal_weights.py OUT_DIR

Writes two model folders under OUT_DIR (never committed):

  resnet50/  torchvision's resnet50() with its random initialisation, eval mode:
             model.safetensors (the state_dict, F32) and config.json
             {"architecture": "resnet50"}
  armor/     the fusion module of plugins/fusion/tests/fixtures/make_fixtures.py
             (nn.Linear initialisation) at text_dim 384 (all-MiniLM-L6-v2),
             image_dim 2048 (ResNet-50's pooled features), attention_dim 256,
             output_dim 256: model.safetensors and config.json

There are no pretrained ResNet or fusion weights here: these check the pipeline, not
the quality of the paper's model. Seeded (torch.manual_seed(0)).
"""

import importlib.util
import json
import os
import sys

import torch
from safetensors.torch import save_file
from torchvision.models import resnet50

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "plugins", "fusion", "tests", "fixtures", "make_fixtures.py")
DIMS = {"text_dim": 384, "image_dim": 2048, "attention_dim": 256, "output_dim": 256}


def fusion_module_class():
    """The Fusion class of the fusion plugin's fixture script (the reference module)."""
    spec = importlib.util.spec_from_file_location("fusion_fixtures", FIXTURES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Fusion


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    torch.manual_seed(0)

    resnet_dir = os.path.join(out, "resnet50")
    os.makedirs(resnet_dir, exist_ok=True)
    model = resnet50(weights=None).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(resnet_dir, "model.safetensors"))
    with open(os.path.join(resnet_dir, "config.json"), "w") as f:
        json.dump({"architecture": "resnet50"}, f)

    fusion_dir = os.path.join(out, "armor")
    os.makedirs(fusion_dir, exist_ok=True)
    fusion = fusion_module_class()(**DIMS, qkv_bias=True).eval()
    state = {k: v.contiguous() for k, v in fusion.state_dict().items()}
    save_file(state, os.path.join(fusion_dir, "model.safetensors"))
    with open(os.path.join(fusion_dir, "config.json"), "w") as f:
        json.dump({**DIMS, "qkv_bias": True}, f)
    print(f"wrote {resnet_dir} and {fusion_dir}")


if __name__ == "__main__":
    main()
