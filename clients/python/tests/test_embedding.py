"""EmbeddingService through the blocking client: embeddings equal sentence-transformers'."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import pytest
from helpers import cosine, texts

import marquee


def test_embed_equals_sentence_transformers(client: marquee.Client, minilm_reference: Dict[str, Any]) -> None:
    items = minilm_reference["items"]
    vectors = client.embed([i["text"] for i in items], model="minilm")
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(items), minilm_reference["dim"])
    for item, vector in zip(items, vectors):
        assert cosine(vector, item["embedding"]) >= 0.99999, item["text"]
        np.testing.assert_allclose(vector, item["embedding"], atol=1e-5)


def test_embed_one_input_and_the_default_model(client: marquee.Client, minilm_reference: Dict[str, Any]) -> None:
    item = minilm_reference["items"][1]
    one = client.embed(item["text"])
    assert one.shape == (1, minilm_reference["dim"])
    assert cosine(one[0], item["embedding"]) >= 0.99999


def test_embed_refuses_what_the_model_does_not_take(client: marquee.Client, minilm_reference: Dict[str, Any]) -> None:
    long_text = next(i["text"] for i in minilm_reference["items"] if i["tokens_untruncated"] > 256)
    assert client.embed(long_text).shape == (1, 384)
    with pytest.raises(marquee.InvalidArgument, match="token"):
        client.embed(long_text, truncate=False)
    with pytest.raises(marquee.InvalidArgument):
        client.embed(b"\x89PNG not an image for a text model")
    with pytest.raises(marquee.InvalidArgument):
        client.embed([marquee.Multimodal("a pipeline input")])
    with pytest.raises(marquee.InvalidArgument):
        client.embed([marquee.FusionVectors(text=np.ones(384, dtype=np.float32))])
    with pytest.raises(marquee.NotFound, match="nope"):
        client.embed(["hello"], model="nope")
    with pytest.raises(TypeError):
        client.embed([3.5])  # type: ignore[list-item]


def test_embed_stream_answers_every_request(client: marquee.Client, minilm_reference: Dict[str, Any]) -> None:
    corpus = texts(minilm_reference, 24)
    batches: List[Any] = [corpus[i : i + 4] for i in range(0, len(corpus), 4)]
    batches.insert(2, [""])  # an empty text fails alone; the stream goes on
    with client.embed_stream(iter(batches), model="minilm") as stream:
        results = sorted(stream, key=lambda r: r.index)
    assert [r.index for r in results] == list(range(len(batches)))
    failed = results[2]
    assert failed.embeddings is None and isinstance(failed.error, marquee.InvalidArgument)
    expected = client.embed(corpus, model="minilm")
    got = np.concatenate([r.embeddings for r in results if r.embeddings is not None])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_embed_stream_reraises_the_callers_exception(client: marquee.Client) -> None:
    def requests() -> Any:
        yield ["first"]
        raise KeyError("broken input source")

    with pytest.raises(KeyError, match="broken input source"):
        list(client.embed_stream(requests()))


def test_a_deadline_passes(client: marquee.Client, minilm_reference: Dict[str, Any]) -> None:
    with pytest.raises(marquee.DeadlineExceeded):
        client.embed([i["text"] for i in minilm_reference["items"]] * 10, timeout=0.001)
