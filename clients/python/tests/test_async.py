"""AsyncClient: every method against the shared server, checked against the blocking
client's answers."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Tuple

import numpy as np
import pytest
from conftest import Server, minilm_dir
from helpers import QWEN_FIXTURES, chat, cosine, texts

import marquee


def run(server: Server, body: Callable[[marquee.AsyncClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async with marquee.AsyncClient(server.grpc, timeout=60) as client:
            await body(client)

    asyncio.run(main())


async def aiter_of(values: List[Any]) -> AsyncIterator[Any]:
    for v in values:
        await asyncio.sleep(0)
        yield v


def test_async_embedding(server: Server, client: marquee.Client, minilm_reference: Dict[str, Any]) -> None:
    corpus = texts(minilm_reference, 12)
    expected = client.embed(corpus, model="minilm")

    async def body(aclient: marquee.AsyncClient) -> None:
        vectors = await aclient.embed(corpus, model="minilm")
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(vectors, expected, atol=1e-6)
        item = minilm_reference["items"][5]
        assert cosine((await aclient.embed(item["text"]))[0], item["embedding"]) >= 0.99999
        batches: List[Any] = [corpus[:5], [""], corpus[5:]]
        async with aclient.embed_stream(aiter_of(batches), model="minilm") as stream:
            results = sorted([r async for r in stream], key=lambda r: r.index)
        assert isinstance(results[1].error, marquee.InvalidArgument)
        assert results[0].embeddings is not None and results[2].embeddings is not None
        np.testing.assert_allclose(np.concatenate([results[0].embeddings, results[2].embeddings]), expected, atol=1e-6)
        from_list = [r async for r in aclient.embed_stream([corpus[:2]], model="minilm")]
        assert from_list[0].embeddings is not None and from_list[0].embeddings.shape == (2, 384)
        with pytest.raises(marquee.NotFound):
            await aclient.embed("x", model="nope")

        async def broken() -> AsyncIterator[List[str]]:
            yield ["first"]
            raise KeyError("broken input source")

        with pytest.raises(KeyError, match="broken input source"):
            [r async for r in aclient.embed_stream(broken())]

    run(server, body)


def test_async_models(server: Server, client: marquee.Client) -> None:
    def settled(info: marquee.ModelInfo) -> marquee.ModelInfo:
        """The model's description without its live queue depth (an earlier test's
        abandoned request may still be leaving the queue)."""
        copy = type(info)()
        copy.CopyFrom(info)
        copy.ClearField("queued_inputs")
        return copy

    async def body(aclient: marquee.AsyncClient) -> None:
        assert [settled(m) for m in await aclient.list_models()] == [settled(m) for m in client.list_models()]
        assert settled(await aclient.get_model("minilm")) == settled(client.get_model("minilm"))
        info = await aclient.load_model("async-minilm", str(minilm_dir()), options={"max_seq_length": 64})
        assert info.max_input_tokens == 64
        await aclient.unload_model("async-minilm")
        with pytest.raises(marquee.NotFound):
            await aclient.get_model("async-minilm")

    run(server, body)


def test_async_retrieval_and_evaluation(
    server: Server, client: marquee.Client, minilm_reference: Dict[str, Any]
) -> None:
    corpus = texts(minilm_reference, 16)

    async def body(aclient: marquee.AsyncClient) -> None:
        info = await aclient.create_collection("async", 384, model="minilm", index="hnsw")
        assert info.index.WhichOneof("kind") == "hnsw"
        items = [marquee.Item(f"a{i:02d}", t, {"n": i}) for i, t in enumerate(corpus)]
        assert await aclient.upsert("async", aiter_of(items), batch_size=5) == len(items)
        assert await aclient.upsert("async", items[:2]) == 2
        assert (await aclient.get_collection("async")).items == len(items)
        assert "async" in [c.name for c in await aclient.list_collections()]
        hits = await aclient.search("async", corpus[4], k=3, filter={"n": marquee.Range(lt=10)}, with_payload=True)
        assert hits == client.search("async", corpus[4], k=3, filter={"n": marquee.Range(lt=10)}, with_payload=True)
        assert hits[0].id == "a04" and hits[0].payload == {"n": 4}
        got = await aclient.get("async", ["a01", "zz"], with_vectors=True)
        assert got.missing == ["zz"] and got.items[0].vector is not None
        assert await aclient.delete("async", ["a15", "zz"]) == 1

        ratings = [marquee.Rating(f"u{u}", f"a{(u + n) % 15:02d}", 5.0, n) for u in range(4) for n in range(6)]
        assert await aclient.record_ratings("async", aiter_of(ratings), batch_size=4) == len(ratings)
        recommended = await aclient.recommend("async", user_id="u1", k=4)
        assert recommended == client.recommend("async", user_id="u1", k=4)
        assert await aclient.recommend("async", ratings={"a00": 5.0}, k=2) == client.recommend(
            "async", ratings={"a00": 5.0}, k=2
        )

        queries = [marquee.EvalQuery(f"q{i}", corpus[i], [f"a{i:02d}"]) for i in range(5)]
        progress: List[Tuple[int, int]] = []
        report = await aclient.evaluate_retrieval(
            "async", aiter_of(queries), cutoffs=(1, 5), progress=lambda d, t: progress.append((d, t))
        )
        assert report == client.evaluate_retrieval("async", queries, cutoffs=(1, 5))
        assert report.metrics.values["recall@1"] == pytest.approx(1.0)
        assert progress[-1] == (5, 5)
        recs = await aclient.evaluate_recommendations("async", cutoffs=(5,), min_high_ratings=3)
        assert recs == client.evaluate_recommendations("async", cutoffs=(5,), min_high_ratings=3)
        assert recs.queries == 4

        async def broken() -> AsyncIterator[marquee.Item]:
            yield items[0]
            raise KeyError("broken item source")

        with pytest.raises(KeyError, match="broken item source"):
            await aclient.upsert("async", broken(), batch_size=1)
        with pytest.raises(TypeError):
            await aclient.record_ratings("async", [("u1", "a00", 5.0)])  # type: ignore[list-item]
        with pytest.raises(marquee.InvalidArgument):
            await aclient.upsert("async", [marquee.Item("short", [1.0])])

        await aclient.delete_collection("async")
        with pytest.raises(marquee.NotFound):
            await aclient.get_collection("async")

    run(server, body)


def test_async_generation(server: Server, client: marquee.Client, qwen_expected: Dict[str, Any]) -> None:
    async def body(aclient: marquee.AsyncClient) -> None:
        prompt = chat(qwen_expected, "nested", 0)
        whole = await aclient.generate(prompt, model="tiny", max_new_tokens=32)
        assert list(whole.token_ids) == qwen_expected["nested"]["generations"][0]["greedy"]
        events = [e async for e in aclient.generate_stream(prompt, model="tiny", max_new_tokens=32)]
        assert all(isinstance(e, marquee.GenerationDelta) for e in events[:-1])
        final = events[-1]
        assert isinstance(final, marquee.GenerationResult)
        assert "".join(e.text for e in events[:-1]) == final.text == whole.text
        assert final.token_ids == whole.token_ids

        stream = aclient.generate_stream("Hi", max_new_tokens=200, min_new_tokens=200)
        assert isinstance(await stream.__anext__(), marquee.GenerationDelta)
        stream.cancel()
        with pytest.raises(marquee.Cancelled):
            await stream.__anext__()

        await aclient.load_model("async-flat", str(QWEN_FIXTURES / "tiny-flat"))
        adapter = await aclient.load_adapter("lora-b", str(QWEN_FIXTURES / "lora-b"), model="async-flat")
        assert adapter.name == "lora-b"
        assert [a.name for a in await aclient.list_adapters(model="async-flat")] == ["lora-b"]
        run_ = qwen_expected["lora"]["generations"][2]
        result = await aclient.generate(
            chat(qwen_expected, "flat", 2), model="async-flat", max_new_tokens=32, adapter="lora-b"
        )
        assert list(result.token_ids) == run_["greedy"]
        await aclient.unload_adapter("lora-b", model="async-flat")
        assert await aclient.list_adapters(model="async-flat") == []
        await aclient.unload_model("async-flat")

        report = await aclient.evaluate_generation(
            [
                marquee.GenerationEvalItem("a", ["a red car"], candidate="a red car"),
                marquee.GenerationEvalItem("b", ["x"], generate=marquee.generate_request("Hi", max_new_tokens=4)),
            ],
            per_item=True,
        )
        assert report.items == 2 and report.per_item[0].bleu.score == pytest.approx(100.0)
        with pytest.raises(marquee.DeadlineExceeded):
            await aclient.generate("Hi", max_new_tokens=256, min_new_tokens=256, timeout=0.002)

    run(server, body)
