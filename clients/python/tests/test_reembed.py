"""Collections keep the texts of text items, and ``reembed_collection`` re-embeds them
with another text encoder (here all-MiniLM-L6-v2 under a second name), blocking and
async, reporting progress."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
from conftest import minilm_dir, start_server

import marquee


def test_reembedding_keeps_texts_and_switches_models(workdir: Path) -> None:
    server = start_server(workdir, "reembed", ["--model", f"minilm2={minilm_dir()}"])
    try:
        texts = [f"note {i} about {('tea', 'rain', 'maps')[i % 3]}" for i in range(12)]
        ids = [f"n{i:02d}" for i in range(12)]
        with marquee.Client(server.grpc, timeout=60) as client:
            client.create_collection("notes", 384, model="minilm")
            client.upsert("notes", [marquee.Item(i, t, {"k": n}) for n, (i, t) in enumerate(zip(ids, texts))])
            got = client.get("notes", ids, with_texts=True)
            assert [i.text for i in got.items] == texts
            assert client.get("notes", ids[:1]).items[0].text is None
            seen: List[Tuple[int, int]] = []
            info = client.reembed_collection("notes", model="minilm2", progress=lambda d, t: seen.append((d, t)))
            assert (info.model, info.dimension, info.items) == ("minilm2", 384, 12)
            assert seen[0] == (0, 12) and seen[-1] == (12, 12)
            stored = client.get("notes", ids, with_vectors=True, with_texts=True)
            expected = client.embed(texts, model="minilm2")
            for item, want in zip(stored.items, expected):
                assert item.vector is not None
                np.testing.assert_allclose(item.vector, want / np.linalg.norm(want), atol=1e-5)
            with pytest.raises(marquee.NotFound, match="nope"):
                client.reembed_collection("notes", model="nope")

        async def back() -> marquee.v1.retrieval_pb2.CollectionInfo:
            async with marquee.AsyncClient(server.grpc, timeout=60) as aclient:
                return await aclient.reembed_collection("notes", model="minilm")

        assert asyncio.run(back()).model == "minilm"
    finally:
        server.stop()
