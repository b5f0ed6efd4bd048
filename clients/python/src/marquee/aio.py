"""The asyncio client, :class:`AsyncClient`, on ``grpc.aio``."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

import grpc
import grpc.aio
import numpy as np
import numpy.typing as npt

from . import _convert as C
from ._connection import TLSConfig, connection
from ._streams import AsyncStream, RequestGuard
from .client import DEFAULT_TARGET
from .errors import MarqueeError, from_rpc_error
from .types import (
    EmbedInput,
    EmbedStreamResult,
    EvalQuery,
    Filter,
    GenerationEvalItem,
    GetResult,
    Hit,
    Hnsw,
    Item,
    Multimodal,
    Progress,
    Prompt,
    Rating,
    Vector,
)
from .v1 import (
    embedding_pb2,
    embedding_pb2_grpc,
    evaluation_pb2,
    evaluation_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)

Response = TypeVar("Response")
T = TypeVar("T")

Items = Union[Iterable[T], AsyncIterable[T]]
"""A synchronous or an asynchronous iterable."""


class AsyncClient:
    """An asyncio connection to one Marquee server, on ``grpc.aio``.

    It takes the arguments of :class:`marquee.Client` and has the same methods, as
    coroutines; the streaming ones (:meth:`embed_stream`, :meth:`generate_stream`)
    return :class:`marquee.AsyncStream` asynchronous iterators, and the client-streaming
    ones also take asynchronous iterables. Create it inside a running event loop and
    close it with ``await client.close()`` or ``async with``.

    Example::

        async with marquee.AsyncClient("127.0.0.1:50051") as client:
            vectors = await client.embed(["a heist film"])
            async for event in client.generate_stream("Hi", max_new_tokens=16):
                ...
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: Optional[str] = None,
        tls: Union[bool, TLSConfig, None] = None,
        timeout: Optional[float] = None,
        options: Sequence[Tuple[str, Any]] = (),
    ) -> None:
        conn = connection(target, token, tls, options)
        if conn.credentials is None:
            self._channel = grpc.aio.insecure_channel(conn.address, options=conn.options)
        else:
            self._channel = grpc.aio.secure_channel(conn.address, conn.credentials, options=conn.options)
        self._metadata = conn.metadata
        self._timeout = timeout
        self._embedding = embedding_pb2_grpc.EmbeddingServiceStub(self._channel)
        self._models = models_pb2_grpc.ModelServiceStub(self._channel)
        self._retrieval = retrieval_pb2_grpc.RetrievalServiceStub(self._channel)
        self._evaluation = evaluation_pb2_grpc.EvaluationServiceStub(self._channel)
        self._training = training_pb2_grpc.TrainingServiceStub(self._channel)
        self._generation = generation_pb2_grpc.GenerationServiceStub(self._channel)

    async def close(self) -> None:
        """Closes the channel; calls in progress are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self.close()

    # Calls.

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        return self._timeout if timeout is None else timeout

    async def _unary(self, method: Any, request: Any, timeout: Optional[float]) -> Any:
        try:
            return await method(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from e

    async def _stream_unary(self, method: Any, requests: AsyncIterable[Any], timeout: Optional[float]) -> Any:
        guard: RequestGuard[Any] = RequestGuard(requests)
        call = method(guard, timeout=self._deadline(timeout), metadata=self._metadata)
        guard.call = call
        error: Optional[MarqueeError] = None
        response = None
        try:
            response = await call
        except grpc.RpcError as e:
            error = from_rpc_error(e)
            error.__cause__ = e
        except asyncio.CancelledError:
            if guard.error is None:
                raise  # the task was cancelled, not the call by the guard
        guard.raise_error()
        if error is not None:
            raise error
        return response

    def _stream(
        self,
        method: Any,
        request: Any,
        convert: Callable[[Any], Response],
        timeout: Optional[float],
        client_streaming: bool = False,
    ) -> AsyncStream[Response]:
        guard = RequestGuard(request) if client_streaming else None
        call = method(guard or request, timeout=self._deadline(timeout), metadata=self._metadata)
        if guard is not None:
            guard.call = call
        return AsyncStream(call, convert, guard)

    # EmbeddingService.

    async def embed(
        self,
        inputs: Union[EmbedInput, Sequence[EmbedInput]],
        *,
        model: str = "",
        truncate: bool = True,
        timeout: Optional[float] = None,
    ) -> npt.NDArray[np.float32]:
        """Embeds inputs with a model; see :meth:`marquee.Client.embed`."""
        request = C.embed_request(inputs, model, truncate)
        return C.embeddings(await self._unary(self._embedding.Embed, request, timeout))

    def embed_stream(
        self,
        requests: Items[Union[EmbedInput, Sequence[EmbedInput]]],
        *,
        model: str = "",
        truncate: bool = True,
        timeout: Optional[float] = None,
    ) -> AsyncStream[EmbedStreamResult]:
        """Embeds many batches over one pipelined stream; see :meth:`marquee.Client.embed_stream`.

        ``requests`` may be a synchronous or an asynchronous iterable.
        """

        async def inputs() -> AsyncIterator[embedding_pb2.EmbedRequest]:
            index = 0
            async for batch in C.aiterate(requests):
                yield C.embed_request(batch, model, truncate, str(index))
                index += 1

        return self._stream(self._embedding.EmbedStream, inputs(), C.stream_result, timeout, client_streaming=True)

    # ModelService.

    async def list_models(self, *, timeout: Optional[float] = None) -> List[models_pb2.ModelInfo]:
        """The models and pipelines served, sorted by name (``ListModels``)."""
        response = await self._unary(self._models.ListModels, models_pb2.ListModelsRequest(), timeout)
        return list(response.models)

    async def get_model(self, name: str, *, timeout: Optional[float] = None) -> models_pb2.ModelInfo:
        """One model's information; see :meth:`marquee.Client.get_model`."""
        return await self._unary(self._models.GetModel, models_pb2.GetModelRequest(name=name), timeout)  # type: ignore[no-any-return]

    async def load_model(
        self,
        name: str,
        path: str,
        *,
        plugin: str = "",
        options: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> models_pb2.ModelInfo:
        """Loads a model directory and serves it as ``name``; see :meth:`marquee.Client.load_model`."""
        request = C.load_model_request(name, path, plugin, options)
        return await self._unary(self._models.LoadModel, request, timeout)  # type: ignore[no-any-return]

    async def unload_model(self, name: str, *, timeout: Optional[float] = None) -> None:
        """Stops serving a model; see :meth:`marquee.Client.unload_model`."""
        await self._unary(self._models.UnloadModel, models_pb2.UnloadModelRequest(name=name), timeout)

    # RetrievalService.

    async def create_collection(
        self,
        name: str,
        dimension: int,
        *,
        metric: str = "cosine",
        index: Union[str, Hnsw] = "exact",
        model: str = "",
        device: str = "",
        timeout: Optional[float] = None,
    ) -> retrieval_pb2.CollectionInfo:
        """Creates a durable collection; see :meth:`marquee.Client.create_collection`."""
        request = C.create_collection_request(name, dimension, metric, index, model, device)
        return await self._unary(self._retrieval.CreateCollection, request, timeout)  # type: ignore[no-any-return]

    async def delete_collection(self, name: str, *, timeout: Optional[float] = None) -> None:
        """Deletes a collection and its data (``DeleteCollection``; admin tokens only)."""
        request = retrieval_pb2.DeleteCollectionRequest(name=name)
        await self._unary(self._retrieval.DeleteCollection, request, timeout)

    async def repair_collection(
        self, name: str, *, apply: bool = False, timeout: Optional[float] = None
    ) -> retrieval_pb2.RepairCollectionResponse:
        """What keeping a damaged collection's readable history would drop; with ``apply``,
        cuts its files back to that history and opens it (``RepairCollection``; admin tokens only)."""
        request = retrieval_pb2.RepairCollectionRequest(name=name, apply=apply)
        return await self._unary(self._retrieval.RepairCollection, request, timeout)  # type: ignore[no-any-return]

    async def reembed_collection(
        self,
        name: str,
        *,
        model: str,
        progress: Optional[Progress] = None,
        timeout: Optional[float] = None,
    ) -> retrieval_pb2.CollectionInfo:
        """Re-embeds a collection with another text encoder; see :meth:`marquee.Client.reembed_collection`."""
        request = retrieval_pb2.ReembedCollectionRequest(name=name, model=model)
        collector = C.ReembedCollector(progress)
        async with self._stream(self._retrieval.ReembedCollection, request, lambda m: m, timeout) as stream:
            async for message in stream:
                collector.add(message)
        return collector.collection()

    async def list_collections(self, *, timeout: Optional[float] = None) -> List[retrieval_pb2.CollectionInfo]:
        """Every collection (``ListCollections``)."""
        response = await self._unary(self._retrieval.ListCollections, retrieval_pb2.ListCollectionsRequest(), timeout)
        return list(response.collections)

    async def get_collection(self, name: str, *, timeout: Optional[float] = None) -> retrieval_pb2.CollectionInfo:
        """One collection's configuration and counts (``GetCollection``)."""
        request = retrieval_pb2.GetCollectionRequest(name=name)
        return await self._unary(self._retrieval.GetCollection, request, timeout)  # type: ignore[no-any-return]

    async def upsert(
        self,
        collection: str,
        items: Items[Item],
        *,
        batch_size: int = 256,
        timeout: Optional[float] = None,
    ) -> int:
        """Inserts or replaces items in batches over one call; see :meth:`marquee.Client.upsert`.

        ``items`` may be a synchronous or an asynchronous iterable.
        """
        requests = (C.upsert_request(collection, b) async for b in C.abatches(items, batch_size))
        return int((await self._stream_unary(self._retrieval.Upsert, requests, timeout)).upserted)

    async def delete(self, collection: str, ids: Sequence[str], *, timeout: Optional[float] = None) -> int:
        """Deletes items by id (``Delete``); returns how many existed."""
        request = retrieval_pb2.DeleteRequest(collection=collection, ids=list(ids))
        return int((await self._unary(self._retrieval.Delete, request, timeout)).deleted)

    async def get(
        self,
        collection: str,
        ids: Sequence[str],
        *,
        with_vectors: bool = False,
        with_texts: bool = False,
        timeout: Optional[float] = None,
    ) -> GetResult:
        """Reads items by id; see :meth:`marquee.Client.get`."""
        request = retrieval_pb2.GetRequest(
            collection=collection, ids=list(ids), with_vectors=with_vectors, with_texts=with_texts
        )
        return C.get_result(await self._unary(self._retrieval.Get, request, timeout), with_vectors, with_texts)

    async def search(
        self,
        collection: str,
        query: Union[str, bytes, Multimodal, Vector, None] = None,
        *,
        item_id: Optional[str] = None,
        k: int = 10,
        filter: Optional[Filter] = None,
        with_payload: bool = False,
        timeout: Optional[float] = None,
    ) -> List[Hit]:
        """The items nearest to a query; see :meth:`marquee.Client.search`."""
        request = C.search_request(collection, query, item_id, k, filter, with_payload)
        return C.hits(await self._unary(self._retrieval.Search, request, timeout))

    async def recommend(
        self,
        collection: str,
        *,
        user_id: Optional[str] = None,
        ratings: Optional[Mapping[str, float]] = None,
        k: int = 10,
        min_rating: Optional[float] = None,
        exclude_seen: Optional[bool] = None,
        filter: Optional[Filter] = None,
        with_payload: bool = False,
        timeout: Optional[float] = None,
    ) -> List[Hit]:
        """Items near what a user rated highly; see :meth:`marquee.Client.recommend`."""
        request = C.recommend_request(collection, user_id, ratings, k, min_rating, exclude_seen, filter, with_payload)
        return C.hits(await self._unary(self._retrieval.Recommend, request, timeout))

    async def record_ratings(
        self,
        collection: str,
        ratings: Items[Rating],
        *,
        batch_size: int = 1000,
        timeout: Optional[float] = None,
    ) -> int:
        """Appends ratings to the users' histories; see :meth:`marquee.Client.record_ratings`.

        ``ratings`` may be a synchronous or an asynchronous iterable.
        """
        batched = C.abatches(ratings, batch_size, key=C.rating_user)
        requests = (C.rating_request(collection, b) async for b in batched if b)
        return int((await self._stream_unary(self._retrieval.RecordRatings, requests, timeout)).recorded)

    # EvaluationService.

    async def evaluate_retrieval(
        self,
        collection: str,
        queries: Items[EvalQuery],
        *,
        cutoffs: Sequence[int] = (),
        per_query: bool = False,
        batch_size: int = 1000,
        progress: Optional[Progress] = None,
        timeout: Optional[float] = None,
    ) -> evaluation_pb2.EvaluationReport:
        """Scores retrieval on the server; see :meth:`marquee.Client.evaluate_retrieval`.

        ``queries`` may be a synchronous or an asynchronous iterable.
        """
        batched = C.abatches(queries, batch_size)

        async def requests() -> AsyncIterator[evaluation_pb2.EvaluateRetrievalRequest]:
            first = True
            async for batch in batched:
                yield C.retrieval_eval_request(batch, first, collection, cutoffs, per_query)
                first = False

        stream = self._stream(
            self._evaluation.EvaluateRetrieval, requests(), lambda e: e, timeout, client_streaming=True
        )
        return await self._report(stream, "report", progress)  # type: ignore[no-any-return]

    async def evaluate_recommendations(
        self,
        collection: str,
        *,
        cutoffs: Sequence[int] = (),
        min_rating: Optional[float] = None,
        min_high_ratings: Optional[int] = None,
        progress: Optional[Progress] = None,
        timeout: Optional[float] = None,
    ) -> evaluation_pb2.EvaluationReport:
        """Leave-one-out recommendation quality; see :meth:`marquee.Client.evaluate_recommendations`."""
        request = evaluation_pb2.EvaluateRecommendationsRequest(
            collection=collection, cutoffs=list(cutoffs), min_rating=min_rating, min_high_ratings=min_high_ratings
        )
        stream = self._stream(self._evaluation.EvaluateRecommendations, request, lambda e: e, timeout)
        return await self._report(stream, "report", progress)  # type: ignore[no-any-return]

    async def evaluate_generation(
        self,
        items: Items[GenerationEvalItem],
        *,
        per_item: bool = False,
        bertscore_model: str = "",
        bertscore_layer: int = 0,
        bertscore_idf: bool = False,
        bertscore_baseline_file: str = "",
        rouge_stemmer: bool = False,
        batch_size: int = 100,
        progress: Optional[Progress] = None,
        timeout: Optional[float] = None,
    ) -> evaluation_pb2.GenerationReport:
        """Scores texts against references; see :meth:`marquee.Client.evaluate_generation`.

        ``items`` may be a synchronous or an asynchronous iterable.
        """
        options = evaluation_pb2.GenerationEvalOptions(
            per_item=per_item,
            bertscore_model=bertscore_model,
            bertscore_layer=bertscore_layer,
            bertscore_idf=bertscore_idf,
            bertscore_baseline_file=bertscore_baseline_file,
            rouge_stemmer=rouge_stemmer,
        )
        batched = C.abatches(items, batch_size)

        async def requests() -> AsyncIterator[evaluation_pb2.EvaluateGenerationRequest]:
            first = True
            async for batch in batched:
                yield C.generation_eval_request(batch, options if first else None)
                first = False

        stream = self._stream(
            self._evaluation.EvaluateGeneration, requests(), lambda e: e, timeout, client_streaming=True
        )
        return await self._report(stream, "generation", progress)  # type: ignore[no-any-return]

    async def fine_tune(
        self,
        collection: str,
        *,
        base_model: str,
        output_model: str,
        train: Sequence[EvalQuery],
        validation: Sequence[EvalQuery] = (),
        progress: Optional[Progress] = None,
        on_epoch: Optional[Callable[[training_pb2.EpochReport], None]] = None,
        timeout: Optional[float] = None,
        **settings: Any,
    ) -> training_pb2.FineTuneResult:
        """Fine-tunes a served text encoder; see :meth:`marquee.Client.fine_tune`."""
        requests = C.fine_tune_requests(collection, base_model, output_model, train, validation, settings)
        collector = C.FineTuneCollector(progress, on_epoch)
        async with self._stream(self._training.FineTune, requests, lambda e: e, timeout, client_streaming=True) as stream:
            async for event in stream:
                collector.add(event)
        return collector.result()

    @staticmethod
    async def _report(
        stream: AsyncStream[evaluation_pb2.EvaluationEvent], kind: str, progress: Optional[Progress]
    ) -> Any:
        collector = C.ReportCollector(kind, progress)
        async with stream:
            async for event in stream:
                collector.add(event)
        return collector.report()

    # GenerationService.

    async def generate(
        self,
        prompt: Prompt,
        *,
        model: str = "",
        images: Sequence[bytes] = (),
        max_new_tokens: Optional[int] = None,
        min_new_tokens: int = 0,
        temperature: Optional[float] = None,
        top_k: int = 0,
        top_p: Optional[float] = None,
        repetition_penalty: Optional[float] = None,
        stop: Sequence[str] = (),
        stop_token_ids: Sequence[int] = (),
        seed: Optional[int] = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        adapter: str = "",
        timeout: Optional[float] = None,
    ) -> generation_pb2.GenerationResult:
        """Generates a whole answer; see :meth:`marquee.Client.generate` for the arguments."""
        request = C.generate_request(
            prompt,
            model=model,
            images=images,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            stop=stop,
            stop_token_ids=stop_token_ids,
            seed=seed,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            adapter=adapter,
        )
        return (await self._unary(self._generation.Generate, request, timeout)).result  # type: ignore[no-any-return]

    def generate_stream(
        self,
        prompt: Prompt,
        *,
        model: str = "",
        images: Sequence[bytes] = (),
        max_new_tokens: Optional[int] = None,
        min_new_tokens: int = 0,
        temperature: Optional[float] = None,
        top_k: int = 0,
        top_p: Optional[float] = None,
        repetition_penalty: Optional[float] = None,
        stop: Sequence[str] = (),
        stop_token_ids: Sequence[int] = (),
        seed: Optional[int] = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        adapter: str = "",
        timeout: Optional[float] = None,
    ) -> AsyncStream[C.StreamEvent]:
        """Streams an answer as it is generated; see :meth:`marquee.Client.generate_stream`.

        Not a coroutine: it starts the call and returns an asynchronous iterator of
        :class:`marquee.GenerationDelta` messages and then one :class:`marquee.GenerationResult`.
        """
        request = C.generate_request(
            prompt,
            model=model,
            images=images,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            stop=stop,
            stop_token_ids=stop_token_ids,
            seed=seed,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            adapter=adapter,
        )
        return self._stream(self._generation.GenerateStream, request, C.stream_event, timeout)

    async def load_adapter(
        self, name: str, path: str, *, model: str = "", timeout: Optional[float] = None
    ) -> generation_pb2.AdapterInfo:
        """Loads a LoRA adapter into a generator; see :meth:`marquee.Client.load_adapter`."""
        request = generation_pb2.LoadAdapterRequest(model=model, name=name, path=str(path))
        return await self._unary(self._generation.LoadAdapter, request, timeout)  # type: ignore[no-any-return]

    async def unload_adapter(self, name: str, *, model: str = "", timeout: Optional[float] = None) -> None:
        """Unloads an adapter; sequences already using it finish with it (``UnloadAdapter``)."""
        request = generation_pb2.UnloadAdapterRequest(model=model, name=name)
        await self._unary(self._generation.UnloadAdapter, request, timeout)

    async def list_adapters(
        self, *, model: str = "", timeout: Optional[float] = None
    ) -> List[generation_pb2.AdapterInfo]:
        """The adapters loaded into a generator (``ListAdapters``); empty ``model``: the default one."""
        request = generation_pb2.ListAdaptersRequest(model=model)
        return list((await self._unary(self._generation.ListAdapters, request, timeout)).adapters)
