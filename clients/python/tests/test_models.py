"""ModelService through the blocking client."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import minilm_dir

import marquee


def test_list_and_get_models(client: marquee.Client) -> None:
    models = {m.name: m for m in client.list_models()}
    assert {"minilm", "tiny"} <= set(models)
    minilm = models["minilm"]
    assert minilm.kind == marquee.ModelKind.Value("MODEL_KIND_TEXT_ENCODER")
    assert (minilm.dimension, minilm.max_input_tokens, minilm.plugin) == (384, 256, "bert-text")
    assert minilm.is_default
    assert models["tiny"].kind == marquee.ModelKind.Value("MODEL_KIND_GENERATOR")
    assert client.get_model("tiny") == models["tiny"]
    with pytest.raises(marquee.NotFound, match="nope"):
        client.get_model("nope")


def test_load_and_unload_a_model(client: marquee.Client) -> None:
    info = client.load_model("minilm-128", str(minilm_dir()), plugin="bert-text", options={"max_seq_length": 128})
    assert (info.name, info.max_input_tokens, info.dimension) == ("minilm-128", 128, 384)
    assert client.get_model("minilm-128").max_input_tokens == 128
    np.testing.assert_allclose(
        client.embed(["short text"], model="minilm-128"), client.embed(["short text"], model="minilm"), atol=1e-6
    )
    with pytest.raises(marquee.AlreadyExists):
        client.load_model("minilm-128", str(minilm_dir()))
    client.unload_model("minilm-128")
    with pytest.raises(marquee.NotFound):
        client.get_model("minilm-128")
    with pytest.raises(marquee.NotFound):
        client.load_model("missing", "/nonexistent/model/dir")
