"""Helpers shared by the tests: fixture texts and images, and vector comparisons."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

import numpy as np
import numpy.typing as npt

from marquee import Message

REPO = Path(__file__).resolve().parents[3]
QWEN_FIXTURES = REPO / "plugins" / "qwen2-vl" / "tests" / "fixtures"


def texts(reference: Mapping[str, Any], n: int) -> List[str]:
    """The first ``n`` non-blank texts of the MiniLM reference that differ by more than
    case and whitespace (which the uncased model does not see)."""
    chosen: List[str] = []
    keys = set()
    for item in reference["items"]:
        key = " ".join(item["text"].casefold().split())
        if key and key not in keys:
            keys.add(key)
            chosen.append(item["text"])
        if len(chosen) == n:
            break
    return chosen


def cosine(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Cosine similarity, in float64."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def png(rgb: npt.NDArray[np.uint8]) -> bytes:
    """An RGB image (height, width, 3) encoded as PNG, losslessly."""
    height, width, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def fixture_images() -> List[bytes]:
    """The two images of the Qwen2.5-VL fixtures (``image0.rgb``, ``image1.rgb`` in
    ``expected.safetensors``) as PNG bytes."""
    data = (QWEN_FIXTURES / "expected.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header: Dict[str, Any] = json.loads(data[8 : 8 + size])
    body = data[8 + size :]
    images = []
    for name in ("image0.rgb", "image1.rgb"):
        entry = header[name]
        start, end = entry["data_offsets"]
        images.append(png(np.frombuffer(body[start:end], dtype=np.uint8).reshape(entry["shape"])))
    return images


def chat(expected: Mapping[str, Any], model: str, index: int) -> List[Message]:
    """The fixture's chat prompt ``index`` as messages, its image parts filled with the
    images that ``model``'s generation ``index`` uses, in order."""
    images = fixture_images()
    used = iter(expected[model]["generations"][index]["images"])
    messages = []
    for m in expected["chat"][index]["messages"]:
        content: Union[str, List[Union[str, bytes]]]
        if isinstance(m["content"], str):
            content = m["content"]
        else:
            content = [p["text"] if p["type"] == "text" else images[next(used)] for p in m["content"]]
        messages.append(Message(m["role"], content))
    return messages
