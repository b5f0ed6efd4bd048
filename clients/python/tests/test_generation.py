"""GenerationService through the blocking client, on the tiny random Qwen2.5-VL
fixtures: greedy tokens equal transformers', streams add up to the whole answer, LoRA
adapters, cancellation and a full KV cache answered with a retry hint."""

from __future__ import annotations

import time
from typing import Any, Dict, List

import pytest
from helpers import QWEN_FIXTURES, chat, fixture_images

import marquee


def collect(stream: marquee.Stream[marquee.StreamEvent]) -> List[marquee.StreamEvent]:
    with stream:
        return list(stream)


def test_greedy_tokens_equal_transformers(client: marquee.Client, qwen_expected: Dict[str, Any]) -> None:
    for i in range(len(qwen_expected["chat"])):
        result = client.generate(chat(qwen_expected, "nested", i), model="tiny", max_new_tokens=32)
        assert list(result.token_ids) == qwen_expected["nested"]["generations"][i]["greedy"], f"prompt {i}"
        assert result.finish_reason == marquee.FinishReason.Value("FINISH_REASON_LENGTH")
        assert result.usage.completion_tokens == 32
        assert result.usage.prompt_tokens == len(qwen_expected["nested"]["generations"][i]["prompt_ids"])


def test_stream_adds_up_to_the_whole_answer(client: marquee.Client) -> None:
    events = collect(client.generate_stream("Tell me about films.", max_new_tokens=24, logprobs=True, top_logprobs=3))
    deltas, final = events[:-1], events[-1]
    assert deltas and all(isinstance(e, marquee.GenerationDelta) for e in deltas)
    assert isinstance(final, marquee.GenerationResult)
    whole = client.generate("Tell me about films.", max_new_tokens=24, logprobs=True, top_logprobs=3)
    assert "".join(d.text for d in deltas) == final.text == whole.text
    streamed = [t for d in deltas for t in d.tokens]
    assert [t.token_id for t in streamed] == list(final.token_ids) == list(whole.token_ids)
    assert len(streamed) == 24
    for token, reference in zip(streamed, whole.tokens):
        assert token.logprob == pytest.approx(reference.logprob, abs=1e-5)
        assert token.logprob <= 0.0 and len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob >= token.top_logprobs[-1].logprob


def test_prompts_images_recall_and_parameters(client: marquee.Client, qwen_expected: Dict[str, Any]) -> None:
    images = fixture_images()
    # A str prompt with images is one user message: the images, then the text.
    as_messages = client.generate([marquee.Message("user", [images[0], "What is this?"])], max_new_tokens=8)
    as_dicts = client.generate([{"role": "user", "content": [images[0], "What is this?"]}], max_new_tokens=8)
    shorthand = client.generate("What is this?", images=[images[0]], max_new_tokens=8)
    assert as_messages.token_ids == as_dicts.token_ids == shorthand.token_ids
    assert shorthand.usage.image_tokens > 0

    recall = client.generate(marquee.Recall(scene_images=images, ocr_text="EXIT", transcript="run!"), max_new_tokens=6)
    assert recall.usage.image_tokens > shorthand.usage.image_tokens and recall.usage.completion_tokens == 6

    sampled = [
        client.generate("Hi", max_new_tokens=12, temperature=1.5, top_k=50, top_p=0.9, seed=s).token_ids
        for s in (1, 1, 2)
    ]
    assert sampled[0] == sampled[1] != sampled[2]

    greedy = qwen_expected["nested"]["generations"][1]["greedy"]
    stopped = client.generate(chat(qwen_expected, "nested", 1), max_new_tokens=32, stop_token_ids=[greedy[3]])
    assert list(stopped.token_ids) == greedy[: greedy.index(greedy[3]) + 1]
    assert stopped.finish_reason == marquee.FinishReason.Value("FINISH_REASON_EOS_TOKEN")
    full = client.generate("Tell me about films.", max_new_tokens=24)
    if len(full.text) > 4:
        stop = full.text[2:4]
        cut = client.generate("Tell me about films.", max_new_tokens=24, stop=[stop])
        assert cut.text == full.text[: full.text.index(stop)]
        assert cut.finish_reason == marquee.FinishReason.Value("FINISH_REASON_STOP_SEQUENCE")

    with pytest.raises(marquee.InvalidArgument, match="top_p"):
        client.generate("Hi", top_p=1.5)
    with pytest.raises(marquee.InvalidArgument):
        client.generate("Hi", model="minilm")
    with pytest.raises(marquee.NotFound):
        client.generate("Hi", model="nope")
    with pytest.raises(ValueError):
        client.generate([marquee.Message("user", "Hi")], images=[images[0]])


def test_lora_adapters(client: marquee.Client, qwen_expected: Dict[str, Any]) -> None:
    client.load_model("flat", str(QWEN_FIXTURES / "tiny-flat"))
    try:
        for name in ("lora-a", "lora-b"):
            info = client.load_adapter(name, str(QWEN_FIXTURES / name), model="flat")
            assert (info.model, info.name, info.rank > 0) == ("flat", name, True)
        with pytest.raises(marquee.AlreadyExists):
            client.load_adapter("lora-a", str(QWEN_FIXTURES / "lora-a"), model="flat")
        assert sorted(a.name for a in client.list_adapters(model="flat")) == ["lora-a", "lora-b"]
        for i, run in enumerate(qwen_expected["lora"]["generations"]):
            result = client.generate(
                chat(qwen_expected, "flat", i), model="flat", max_new_tokens=32, adapter=run["adapter"] or ""
            )
            assert list(result.token_ids) == run["greedy"], f"prompt {i}"
        client.unload_adapter("lora-a", model="flat")
        assert [a.name for a in client.list_adapters(model="flat")] == ["lora-b"]
        with pytest.raises(marquee.NotFound, match="lora-a"):
            client.generate("Hi", model="flat", adapter="lora-a", max_new_tokens=4)
    finally:
        client.unload_model("flat")


def test_cancel_and_a_full_cache(client: marquee.Client, qwen_expected: Dict[str, Any]) -> None:
    # 256 tokens of KV cache: a 45-token prompt with 200 new tokens takes every block.
    client.load_model(
        "small-kv", str(QWEN_FIXTURES / "tiny-nested"), options={"kv_cache_tokens": 256, "kv_block_size": 16}
    )
    try:
        prompt = chat(qwen_expected, "nested", 1)
        stream = client.generate_stream(prompt, model="small-kv", max_new_tokens=200)
        assert isinstance(next(stream), marquee.GenerationDelta)
        with pytest.raises(marquee.ResourceExhausted, match="retry in") as refused:
            client.generate(prompt, model="small-kv", max_new_tokens=8)
        assert refused.value.retry_after is not None and refused.value.retry_after > 0
        stream.cancel()
        with pytest.raises(marquee.Cancelled):
            next(stream)
        # The cancelled sequence's blocks are freed at once (give the server a moment).
        deadline = time.monotonic() + 10
        while True:
            try:
                result = client.generate(prompt, model="small-kv", max_new_tokens=8)
                break
            except marquee.ResourceExhausted:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        assert result.usage.completion_tokens == 8
    finally:
        client.unload_model("small-kv")


def test_a_generation_deadline(client: marquee.Client) -> None:
    with pytest.raises(marquee.DeadlineExceeded):
        client.generate("Hi", max_new_tokens=256, min_new_tokens=256, timeout=0.002)
    # A stream cut by its deadline fails so too, whichever side's clock fires first.
    with pytest.raises(marquee.DeadlineExceeded):
        collect(client.generate_stream("Hi", max_new_tokens=256, min_new_tokens=256, timeout=0.002))
