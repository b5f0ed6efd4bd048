"""The generation benchmark's checkpoint: random weights shaped like Qwen2.5-0.5B's text model,
saved as a Qwen2.5-VL model directory (tiny vision tower; the benchmark is text-only), the same
directory saved bf16, the text weights as a plain `Qwen2ForCausalLM` directory for llama.cpp's
converter, and GGUF f32 / f16 files made from it by `convert_hf_to_gguf.py`.

The tokenizer is Qwen2's real byte-level BPE (151,643 tokens and their merges), read from the
`ggml-vocab-qwen2.gguf` that llama-cpp-python's sdist ships, with Qwen2.5's 22 added tokens
(`<|endoftext|>` 151643 … `<|file_sep|>` 151664); the embedding has 151,936 rows as the real
model's. It is checked against the `.inp` / `.out` test vectors of the same sdist.

Everything lands under `benchmarks/.cache/` (git-ignored); each step is skipped when its output
exists.
"""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
LLAMA_CPP_PYTHON = "0.3.36"
SEED = 1234

# Qwen2.5-0.5B's text model.
TEXT = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "sliding_window": 32768,
    "max_window_layers": 24,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "use_cache": True,
}
# Qwen2.5's added tokens, from id 151643 on; `special` as in its tokenizer.json.
ADDED = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
FIRST_ADDED = 151643
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The parity fixture's tokenizer (Qwen2.5's normalizer, pre-tokenizer and decoder around a
# small trained vocabulary) and image preprocessing, which this checkpoint reuses.
FIXTURE = HERE.parent / "plugins" / "qwen2-vl" / "tests" / "fixtures" / "tiny-flat"
# The released models' pixel bounds.
MAX_PIXELS = 12845056


class Paths:
    """Where each artefact of the benchmark's checkpoint lives."""

    def __init__(self, cache=CACHE):
        self.cache = Path(cache)
        self.sdist = self.cache / "sdist"
        self.llama_cpp = self.sdist / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
        self.vl = self.cache / "qwen2.5-vl-0.5b-random"
        self.vl_bf16 = self.cache / "qwen2.5-vl-0.5b-random-bf16"
        self.text = self.cache / "qwen2-0.5b-random-text"
        self.gguf = {p: self.cache / f"qwen2-0.5b-random-{p}.gguf" for p in ("f32", "f16")}


def fetch_sdist(paths):
    """Downloads llama-cpp-python's sdist with pip and unpacks it (converter, gguf-py, vocab)."""
    if paths.llama_cpp.exists():
        return
    paths.sdist.mkdir(parents=True, exist_ok=True)
    archive = paths.sdist / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not archive.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps",
             f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(paths.sdist)],
            check=True,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(paths.sdist, filter="data")


def read_qwen2_vocab(vocab_gguf, gguf_py):
    """Qwen2's BPE tokens (ids below FIRST_ADDED) and merges from llama.cpp's vocab file."""
    sys.path.insert(0, str(gguf_py))
    import gguf  # noqa: PLC0415 (the sdist's own gguf-py, matching its converter)

    reader = gguf.GGUFReader(str(vocab_gguf))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    assert reader.fields["tokenizer.ggml.pre"].contents() == "qwen2"
    assert tokens[FIRST_ADDED] == "<|endoftext|>", tokens[FIRST_ADDED]
    return tokens[:FIRST_ADDED], merges


def build_tokenizer(tokens, merges):
    """Qwen2.5's tokenizer.json: the fixture's NFC normalizer, Qwen split and byte-level
    pre-tokenizer and decoder, around Qwen2's vocabulary and merges and the added tokens."""
    from tokenizers import Tokenizer

    spec = json.loads((FIXTURE / "tokenizer.json").read_text())
    spec["model"] = {
        **spec["model"],
        "vocab": {t: i for i, t in enumerate(tokens)},
        "merges": [m.split(" ", 1) for m in merges],
    }
    spec["added_tokens"] = [
        {"id": FIRST_ADDED + i, "content": content, "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": not special, "special": special}
        for i, (content, special) in enumerate(ADDED)
    ]
    tok = Tokenizer.from_str(json.dumps(spec))
    for i, (content, _) in enumerate(ADDED):
        assert tok.token_to_id(content) == FIRST_ADDED + i, content
    return tok


def check_tokenizer(tok, llama_cpp):
    """Encodes llama.cpp's Qwen2 test inputs and compares with the Hugging Face ids it ships."""
    models_dir = llama_cpp / "models"
    inputs = (models_dir / "ggml-vocab-qwen2.gguf.inp").read_text().split("\n__ggml_vocab_test__\n")
    outputs = (models_dir / "ggml-vocab-qwen2.gguf.out").read_text().split("\n")
    for text, want in zip(inputs, outputs):
        got = tok.encode(text, add_special_tokens=False).ids
        want = [int(t) for t in want.split()]
        if got != want:
            raise SystemExit(f"tokenizer differs from Qwen2's on {text!r}: {got} != {want}")


def write_tokenizer_files(tok, out):
    tok.save(str(out / "tokenizer.json"))
    added = {
        str(FIRST_ADDED + i): {
            "content": c, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": s,
        }
        for i, (c, s) in enumerate(ADDED)
    }
    (out / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 32768,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
        "chat_template": CHAT_TEMPLATE,
    }, indent=2))


def vision_config():
    """The parity fixture's tiny vision tower cut to one (full-attention) block, its output as
    wide as the decoder (never run by the benchmark)."""
    vision = json.loads((FIXTURE / "config.json").read_text())["vision_config"]
    return {**vision, "depth": 1, "fullatt_block_indexes": [0], "window_size": 112,
            "out_hidden_size": TEXT["hidden_size"]}


def vl_config():
    ids = {
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "vision_token_id": 151654,
        "image_token_id": 151655,
        "video_token_id": 151656,
    }
    return {
        **TEXT,
        # M-RoPE sections of a 64-wide head (half of it: 32 frequency slots), in
        # the 2:3:3 proportion of the released models' [16, 24, 24].
        "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]},
        "vision_config": vision_config(),
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "torch_dtype": "float32",
        **ids,
    }


def make_vl_model(tok, out):
    """Random weights (transformers' own initialisation, seeded), saved f32."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(**vl_config())
    torch.manual_seed(SEED)
    model = Qwen2_5_VLForConditionalGeneration(config).eval().to(torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True, max_shard_size="8GB")
    write_tokenizer_files(tok, out)
    preprocessor = json.loads((FIXTURE / "preprocessor_config.json").read_text())
    preprocessor["max_pixels"] = MAX_PIXELS
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643}))


def make_bf16_model(vl, out):
    """The Qwen2.5-VL directory with every tensor saved bf16, as released checkpoints are."""
    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for path in vl.iterdir():
        if path.suffix == ".safetensors":
            tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(path)).items()}
            save_file(tensors, str(out / path.name), metadata={"format": "pt"})
        elif path.name == "config.json":
            config = json.loads(path.read_text())
            config["torch_dtype"] = "bfloat16"
            (out / path.name).write_text(json.dumps(config, indent=2))
        elif path.suffix in (".json", ".jinja"):
            (out / path.name).write_bytes(path.read_bytes())


def make_text_model(vl, out):
    """The Qwen2.5-VL directory's text weights as a `Qwen2ForCausalLM` (what llama.cpp's
    converter reads): same tensors, renamed, untouched."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {}
    for shard in sorted(vl.glob("*.safetensors")):
        for name, t in load_file(str(shard)).items():
            for prefix in ("model.language_model.", "model."):
                if name.startswith(prefix) and not name.startswith("model.visual."):
                    tensors["model." + name[len(prefix):]] = t
                    break
    assert "model.embed_tokens.weight" in tensors and "model.layers.0.self_attn.q_proj.bias" in tensors
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.float32).contiguous() for k, v in tensors.items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {**TEXT, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
              "torch_dtype": "float32", "bos_token_id": 151643, "eos_token_id": 151645}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        (out / name).write_bytes((vl / name).read_bytes())


def convert_gguf(paths, precision):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(paths.llama_cpp / "gguf-py"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(
        [sys.executable, str(paths.llama_cpp / "convert_hf_to_gguf.py"), str(paths.text),
         "--outtype", precision, "--outfile", str(paths.gguf[precision])],
        check=True, env=env,
    )


def ensure(paths=None):
    """Makes whatever is missing of the checkpoint, its text-only copy and the GGUF files."""
    paths = paths or Paths()
    fetch_sdist(paths)
    if not (paths.vl / "config.json").exists():
        tokens, merges = read_qwen2_vocab(
            paths.llama_cpp / "models" / "ggml-vocab-qwen2.gguf", paths.llama_cpp / "gguf-py")
        tok = build_tokenizer(tokens, merges)
        check_tokenizer(tok, paths.llama_cpp)
        print(f"making {paths.vl}", file=sys.stderr)
        make_vl_model(tok, paths.vl)
    if not (paths.vl_bf16 / "config.json").exists():
        print(f"making {paths.vl_bf16}", file=sys.stderr)
        make_bf16_model(paths.vl, paths.vl_bf16)
    if not (paths.text / "model.safetensors").exists():
        print(f"making {paths.text}", file=sys.stderr)
        make_text_model(paths.vl, paths.text)
    for precision, path in paths.gguf.items():
        if not path.exists():
            print(f"converting to {path}", file=sys.stderr)
            convert_gguf(paths, precision)
    return paths


if __name__ == "__main__":
    ensure()
