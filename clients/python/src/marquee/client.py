"""The blocking client, :class:`Client`."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

import grpc
import numpy as np
import numpy.typing as npt

from . import _convert as C
from ._connection import TLSConfig, connection
from ._streams import RequestGuard, Stream
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

DEFAULT_TARGET = "127.0.0.1:50051"
"""The server's default gRPC address."""


class Client:
    """A blocking connection to one Marquee server.

    Args:
        target: The server's gRPC target, e.g. ``"127.0.0.1:50051"``. An ``http://``
            prefix means plaintext, ``https://`` TLS; other gRPC targets
            (``dns:///host:port``, ``unix:///path``) work as they are.
        token: Bearer token sent with every call as ``authorization: Bearer <token>``.
        tls: ``True`` for TLS with gRPC's default root certificates, or a
            :class:`TLSConfig` with a CA, a client certificate and key (paths or PEM
            bytes) and a server name override. ``None`` (the default) follows the
            target's scheme: TLS for ``https://``, plaintext otherwise.
        timeout: Default deadline of every call, in seconds; each method's ``timeout``
            overrides it. ``None``: no deadline.
        options: Extra gRPC channel arguments, e.g. ``[("grpc.keepalive_time_ms", 30000)]``.

    Every method raises a :class:`marquee.MarqueeError` subclass when the call fails
    (:class:`marquee.NotFound`, :class:`marquee.InvalidArgument`, ...). The client is
    thread-safe; close it (or use it as a context manager) to release the channel.

    Example::

        with marquee.Client("127.0.0.1:50051") as client:
            vectors = client.embed(["a heist film", "a lighthouse in a storm"])
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
            self._channel = grpc.insecure_channel(conn.address, options=conn.options)
        else:
            self._channel = grpc.secure_channel(conn.address, conn.credentials, options=conn.options)
        self._metadata = conn.metadata
        self._timeout = timeout
        self._embedding = embedding_pb2_grpc.EmbeddingServiceStub(self._channel)
        self._models = models_pb2_grpc.ModelServiceStub(self._channel)
        self._retrieval = retrieval_pb2_grpc.RetrievalServiceStub(self._channel)
        self._evaluation = evaluation_pb2_grpc.EvaluationServiceStub(self._channel)
        self._generation = generation_pb2_grpc.GenerationServiceStub(self._channel)
        self._training = training_pb2_grpc.TrainingServiceStub(self._channel)

    def close(self) -> None:
        """Closes the channel; calls in progress are cancelled."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    # Calls.

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        return self._timeout if timeout is None else timeout

    def _unary(self, method: Any, request: Any, timeout: Optional[float]) -> Any:
        try:
            return method(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from e

    def _stream_unary(self, method: Any, requests: Iterable[Any], timeout: Optional[float]) -> Any:
        guard: RequestGuard[Any] = RequestGuard(requests)
        call = method.future(guard, timeout=self._deadline(timeout), metadata=self._metadata)
        guard.call = call
        error: Optional[MarqueeError] = None
        response = None
        try:
            response = call.result()
        except grpc.FutureCancelledError:
            pass  # only the guard cancels, and then has an error to raise
        except grpc.RpcError as e:
            error = from_rpc_error(e)
            error.__cause__ = e
        except BaseException:
            call.cancel()
            raise
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
    ) -> Stream[Response]:
        guard = RequestGuard(request) if client_streaming else None
        call = method(guard or request, timeout=self._deadline(timeout), metadata=self._metadata)
        if guard is not None:
            guard.call = call
        return Stream(call, convert, guard)

    # EmbeddingService.

    def embed(
        self,
        inputs: Union[EmbedInput, Sequence[EmbedInput]],
        *,
        model: str = "",
        truncate: bool = True,
        timeout: Optional[float] = None,
    ) -> npt.NDArray[np.float32]:
        """Embeds inputs with a model (``Embed``).

        Args:
            inputs: One input or a sequence of them (at most the server's
                ``limits.max_inputs_per_request``, 1024 by default): ``str`` texts,
                ``bytes`` encoded images, :class:`marquee.Multimodal`,
                :class:`marquee.FusionVectors` or :class:`marquee.StoredFusion`, as the
                model's kind takes.
            model: The model's name; empty for the server's default model.
            truncate: Cut texts longer than the model's token limit (the default);
                ``False`` makes such texts fail with :class:`marquee.InvalidArgument`.
            timeout: Deadline in seconds, instead of the client's default.

        Returns:
            A ``float32`` array of shape ``(len(inputs), dimension)``, one row per input
            in order (one row for a single input).
        """
        request = C.embed_request(inputs, model, truncate)
        return C.embeddings(self._unary(self._embedding.Embed, request, timeout))

    def embed_stream(
        self,
        requests: Iterable[Union[EmbedInput, Sequence[EmbedInput]]],
        *,
        model: str = "",
        truncate: bool = True,
        timeout: Optional[float] = None,
    ) -> Stream[EmbedStreamResult]:
        """Embeds many batches over one pipelined stream (``EmbedStream``).

        The server works on up to ``limits.max_stream_in_flight`` requests at once and
        answers each as soon as it is done, so answers may come out of order: each
        carries its request's position. A failed request yields a result with an
        ``error`` and the stream goes on.

        Args:
            requests: Batches of inputs, each as ``embed`` takes them; read lazily as the
                server accepts them.
            model: The model's name; empty for the server's default model.
            truncate: As for :meth:`embed`.
            timeout: Deadline of the whole stream in seconds.

        Returns:
            An iterator of :class:`marquee.EmbedStreamResult`, one per request.
        """
        inputs = (C.embed_request(r, model, truncate, str(i)) for i, r in enumerate(requests))
        return self._stream(self._embedding.EmbedStream, inputs, C.stream_result, timeout, client_streaming=True)

    # ModelService.

    def list_models(self, *, timeout: Optional[float] = None) -> List[models_pb2.ModelInfo]:
        """The models and pipelines served, sorted by name (``ListModels``)."""
        return list(self._unary(self._models.ListModels, models_pb2.ListModelsRequest(), timeout).models)

    def get_model(self, name: str, *, timeout: Optional[float] = None) -> models_pb2.ModelInfo:
        """One model's information (``GetModel``); :class:`marquee.NotFound` if not served."""
        return self._unary(self._models.GetModel, models_pb2.GetModelRequest(name=name), timeout)  # type: ignore[no-any-return]

    def load_model(
        self,
        name: str,
        path: str,
        *,
        plugin: str = "",
        options: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> models_pb2.ModelInfo:
        """Loads a model directory and serves it as ``name`` (``LoadModel``; admin tokens only).

        Args:
            name: Name to serve it under; :class:`marquee.AlreadyExists` if taken.
            path: The model directory on the server's file system.
            plugin: Plugin name (e.g. ``"bert-text"``); empty picks the first plugin
                that accepts the directory.
            options: Plugin options, sent as a JSON object (e.g. ``{"max_seq_length": 256}``).
            timeout: Deadline in seconds.
        """
        request = C.load_model_request(name, path, plugin, options)
        return self._unary(self._models.LoadModel, request, timeout)  # type: ignore[no-any-return]

    def unload_model(self, name: str, *, timeout: Optional[float] = None) -> None:
        """Stops serving a model; requests already queued complete (``UnloadModel``; admin tokens only)."""
        self._unary(self._models.UnloadModel, models_pb2.UnloadModelRequest(name=name), timeout)

    # RetrievalService.

    def create_collection(
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
        """Creates a durable collection (``CreateCollection``).

        Args:
            name: Letters, digits, ``-``, ``_``, ``.``; :class:`marquee.AlreadyExists` if taken.
            dimension: Length of its vectors.
            metric: ``"cosine"`` (vectors normalised on the way in), ``"inner_product"``
                or ``"l2"`` (scores are negated squared distances).
            index: ``"exact"``, ``"hnsw"`` (server defaults) or a :class:`marquee.Hnsw`.
            model: An embedding model (or pipeline) bound to the collection, so that
                items and queries can be texts or images.
            device: Where exact search runs: ``"auto"``, ``"cpu"``, ``"cuda:N"``; empty for
                the server's ``retrieval.device``.
            timeout: Deadline in seconds.
        """
        request = C.create_collection_request(name, dimension, metric, index, model, device)
        return self._unary(self._retrieval.CreateCollection, request, timeout)  # type: ignore[no-any-return]

    def delete_collection(self, name: str, *, timeout: Optional[float] = None) -> None:
        """Deletes a collection and its data (``DeleteCollection``; admin tokens only)."""
        self._unary(self._retrieval.DeleteCollection, retrieval_pb2.DeleteCollectionRequest(name=name), timeout)

    def repair_collection(
        self, name: str, *, apply: bool = False, timeout: Optional[float] = None
    ) -> retrieval_pb2.RepairCollectionResponse:
        """What keeping a damaged collection's readable history would drop; with ``apply``,
        cuts its files back to that history and opens it (``RepairCollection``; admin tokens only)."""
        request = retrieval_pb2.RepairCollectionRequest(name=name, apply=apply)
        return self._unary(self._retrieval.RepairCollection, request, timeout)  # type: ignore[no-any-return]

    def reembed_collection(
        self,
        name: str,
        *,
        model: str,
        progress: Optional[Progress] = None,
        timeout: Optional[float] = None,
    ) -> retrieval_pb2.CollectionInfo:
        """Re-embeds a collection's items from their stored texts with another loaded text
        encoder into a new version that replaces it once complete (``ReembedCollection``;
        admin tokens only). Searches and writes go on meanwhile.

        Args:
            name: The collection.
            model: The text encoder; its dimension becomes the collection's.
            progress: Called with ``(done, total)`` items as the server reports.
            timeout: Deadline of the whole re-embedding in seconds.

        Returns:
            The collection as switched to the new version.
        """
        request = retrieval_pb2.ReembedCollectionRequest(name=name, model=model)
        collector = C.ReembedCollector(progress)
        with self._stream(self._retrieval.ReembedCollection, request, lambda m: m, timeout) as stream:
            for message in stream:
                collector.add(message)
        return collector.collection()

    def list_collections(self, *, timeout: Optional[float] = None) -> List[retrieval_pb2.CollectionInfo]:
        """Every collection (``ListCollections``)."""
        response = self._unary(self._retrieval.ListCollections, retrieval_pb2.ListCollectionsRequest(), timeout)
        return list(response.collections)

    def get_collection(self, name: str, *, timeout: Optional[float] = None) -> retrieval_pb2.CollectionInfo:
        """One collection's configuration and counts of items, users and ratings (``GetCollection``)."""
        request = retrieval_pb2.GetCollectionRequest(name=name)
        return self._unary(self._retrieval.GetCollection, request, timeout)  # type: ignore[no-any-return]

    def upsert(
        self,
        collection: str,
        items: Iterable[Item],
        *,
        batch_size: int = 256,
        timeout: Optional[float] = None,
    ) -> int:
        """Inserts or replaces items, streamed in batches over one call (``Upsert``).

        Args:
            collection: The collection's name.
            items: :class:`marquee.Item` values from any iterable, read lazily.
            batch_size: Items per message. Each message is stored atomically and
                durably; texts and images in one message are embedded together.
            timeout: Deadline of the whole call in seconds.

        Returns:
            How many items were stored.

        If the server refuses a message, the call fails and the messages before it stay
        stored (upserting is idempotent: send them again). If ``items`` raises, the call
        is cancelled and the exception re-raised; batches already sent may be stored.
        """
        requests = (C.upsert_request(collection, b) for b in C.batches(items, batch_size))
        return int(self._stream_unary(self._retrieval.Upsert, requests, timeout).upserted)

    def delete(self, collection: str, ids: Sequence[str], *, timeout: Optional[float] = None) -> int:
        """Deletes items by id (``Delete``); returns how many existed."""
        request = retrieval_pb2.DeleteRequest(collection=collection, ids=list(ids))
        return int(self._unary(self._retrieval.Delete, request, timeout).deleted)

    def get(
        self,
        collection: str,
        ids: Sequence[str],
        *,
        with_vectors: bool = False,
        with_texts: bool = False,
        timeout: Optional[float] = None,
    ) -> GetResult:
        """Reads items by id (``Get``), with their payloads and optionally their stored vectors
        and texts (the texts of items upserted as text)."""
        request = retrieval_pb2.GetRequest(
            collection=collection, ids=list(ids), with_vectors=with_vectors, with_texts=with_texts
        )
        return C.get_result(self._unary(self._retrieval.Get, request, timeout), with_vectors, with_texts)

    def search(
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
        """The items nearest to a query (``Search``), best first, ties broken by id.

        Args:
            collection: The collection's name.
            query: A vector, or a ``str`` text, ``bytes`` image or
                :class:`marquee.Multimodal` embedded with the collection's model.
            item_id: Instead of ``query``: a stored item, which is left out of the results.
            k: How many hits, from 1 to the server's ``retrieval.max_k``.
            filter: Payload conditions that must all hold (see :data:`marquee.Filter`).
            with_payload: Return each hit's payload.
            timeout: Deadline in seconds.
        """
        request = C.search_request(collection, query, item_id, k, filter, with_payload)
        return C.hits(self._unary(self._retrieval.Search, request, timeout))

    def recommend(
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
        """Items near the mean embedding of what a user rated highly (``Recommend``).

        Args:
            collection: The collection's name.
            user_id: A user whose ratings were recorded with :meth:`record_ratings`.
            ratings: Instead of ``user_id``: the user's ratings inline, ``{item_id: rating}``.
            k: How many hits.
            min_rating: Ratings at or above it make the profile (server default 4.0).
            exclude_seen: Leave out every item the user rated (server default ``True``).
            filter: Payload conditions that must all hold.
            with_payload: Return each hit's payload.
            timeout: Deadline in seconds.
        """
        request = C.recommend_request(collection, user_id, ratings, k, min_rating, exclude_seen, filter, with_payload)
        return C.hits(self._unary(self._retrieval.Recommend, request, timeout))

    def record_ratings(
        self,
        collection: str,
        ratings: Iterable[Rating],
        *,
        batch_size: int = 1000,
        timeout: Optional[float] = None,
    ) -> int:
        """Appends ratings to the users' histories, streamed over one call (``RecordRatings``).

        Args:
            collection: The collection's name.
            ratings: :class:`marquee.Rating` values from any iterable, read lazily;
                consecutive ratings of one user travel in one message (of at most
                ``batch_size``), each stored atomically.
            batch_size: Most ratings per message.
            timeout: Deadline of the whole call in seconds.

        Returns:
            How many ratings were recorded (no ratings: an empty stream, 0 recorded).
        """
        batched = C.batches(ratings, batch_size, key=C.rating_user)
        requests = (C.rating_request(collection, b) for b in batched if b)
        return int(self._stream_unary(self._retrieval.RecordRatings, requests, timeout).recorded)

    # EvaluationService.

    def evaluate_retrieval(
        self,
        collection: str,
        queries: Iterable[EvalQuery],
        *,
        cutoffs: Sequence[int] = (),
        per_query: bool = False,
        batch_size: int = 1000,
        progress: Optional[Progress] = None,
        timeout: Optional[float] = None,
    ) -> evaluation_pb2.EvaluationReport:
        """Scores retrieval on the server: Recall@K, MRR, MRR@K, NDCG@K (``EvaluateRetrieval``).

        Args:
            collection: The collection searched.
            queries: :class:`marquee.EvalQuery` values, streamed in batches.
            cutoffs: The K values (server default 1, 5, 10, 25).
            per_query: Also return each query's rank of its first relevant item.
            batch_size: Queries per message.
            progress: Called with ``(done, total)`` queries as the server reports.
            timeout: Deadline in seconds.

        Returns:
            The report: ``report.metrics.values["recall@10"]`` and so on, averaged over
            queries, and ``report.per_query`` when asked for.
        """
        batched = C.batches(queries, batch_size)
        requests = (C.retrieval_eval_request(b, i == 0, collection, cutoffs, per_query) for i, b in enumerate(batched))
        stream = self._stream(self._evaluation.EvaluateRetrieval, requests, lambda e: e, timeout, client_streaming=True)
        return self._report(stream, "report", progress)  # type: ignore[no-any-return]

    def evaluate_recommendations(
        self,
        collection: str,
        *,
        cutoffs: Sequence[int] = (),
        min_rating: Optional[float] = None,
        min_high_ratings: Optional[int] = None,
        progress: Optional[Progress] = None,
        timeout: Optional[float] = None,
    ) -> evaluation_pb2.EvaluationReport:
        """Leave-one-out recommendation quality over the stored ratings (``EvaluateRecommendations``).

        For every user with at least ``min_high_ratings`` ratings of ``min_rating`` or
        more, the latest such rating is held out and ranked among the unrated catalog.

        Args:
            collection: The collection whose items and ratings are evaluated.
            cutoffs: The K values (server default 5, 10, 20).
            min_rating: What counts as a high rating (server default 4.0).
            min_high_ratings: Users with fewer high ratings are skipped (server default 5).
            progress: Called with ``(done, total)`` users as the server reports.
            timeout: Deadline in seconds.

        Returns:
            The report: ``metrics`` for the embeddings, ``baseline`` for the popularity
            baseline, ``queries`` users evaluated and ``skipped`` users.
        """
        request = evaluation_pb2.EvaluateRecommendationsRequest(
            collection=collection, cutoffs=list(cutoffs), min_rating=min_rating, min_high_ratings=min_high_ratings
        )
        stream = self._stream(self._evaluation.EvaluateRecommendations, request, lambda e: e, timeout)
        return self._report(stream, "report", progress)  # type: ignore[no-any-return]

    def evaluate_generation(
        self,
        items: Iterable[GenerationEvalItem],
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
        """Scores texts against references: BLEU, ROUGE, BERTScore (``EvaluateGeneration``).

        Args:
            items: :class:`marquee.GenerationEvalItem` values, streamed in batches; their
                candidates are given or generated by the server.
            per_item: Also return each item's scores.
            bertscore_model: A served text encoder for BERTScore; empty: no BERTScore.
            bertscore_layer: bert_score's ``num_layers`` (1 to the encoder's depth).
            bertscore_idf: IDF weights computed from the references.
            bertscore_baseline_file: A bert_score baseline CSV on the server, to rescale with.
            rouge_stemmer: ROUGE with the Porter stemmer.
            batch_size: Items per message.
            progress: Called with ``(done, total)`` items as the server reports.
            timeout: Deadline in seconds.

        Returns:
            The report: corpus ``bleu``, mean ``rouge["rouge1"]`` etc., ``bertscore``, and
            ``per_item`` when asked for.
        """
        options = evaluation_pb2.GenerationEvalOptions(
            per_item=per_item,
            bertscore_model=bertscore_model,
            bertscore_layer=bertscore_layer,
            bertscore_idf=bertscore_idf,
            bertscore_baseline_file=bertscore_baseline_file,
            rouge_stemmer=rouge_stemmer,
        )
        batched = C.batches(items, batch_size)
        requests = (C.generation_eval_request(b, options if i == 0 else None) for i, b in enumerate(batched))
        stream = self._stream(
            self._evaluation.EvaluateGeneration, requests, lambda e: e, timeout, client_streaming=True
        )
        return self._report(stream, "generation", progress)  # type: ignore[no-any-return]

    @staticmethod
    def _report(stream: Stream[evaluation_pb2.EvaluationEvent], kind: str, progress: Optional[Progress]) -> Any:
        collector = C.ReportCollector(kind, progress)
        with stream:
            for event in stream:
                collector.add(event)
        return collector.report()

    # TrainingService.

    def fine_tune(
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
        """Fine-tunes a served text encoder on queries whose relevant items are in
        ``collection`` (their stored texts are the positives), and serves the result as
        ``output_model`` (``FineTune``; admin tokens only). Validation queries are ranked
        over the collection before training and after every epoch; the best epoch is kept.

        Args:
            collection: The collection holding the items as text.
            base_model: The served bert-text encoder to start from.
            output_model: The name the result is served under.
            train: :class:`marquee.EvalQuery` values with text queries.
            validation: The same, for validation and early stopping.
            progress: Called with ``(step, total_steps)`` after every step.
            on_epoch: Called with each ``EpochReport`` (epoch 0: the base model).
            timeout: Deadline of the whole job in seconds.
            **settings: ``epochs``, ``batch_size``, ``learning_rate``, ``weight_decay``,
                ``schedule``, ``warmup_ratio``, ``max_grad_norm``, ``scale``,
                ``hard_negatives``, ``projection_dim``, ``seed``, ``patience``, ``threads``
                (server defaults when left out).

        Returns:
            The result: served name, directory, dimension, steps, validation before and after.
        """
        requests = C.fine_tune_requests(collection, base_model, output_model, train, validation, settings)
        collector = C.FineTuneCollector(progress, on_epoch)
        with self._stream(self._training.FineTune, requests, lambda e: e, timeout, client_streaming=True) as stream:
            for event in stream:
                collector.add(event)
        return collector.result()

    # GenerationService.

    def generate(
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
        """Generates a whole answer with a generator model (``Generate``).

        Args:
            prompt: A ``str`` (one user message), a chat as a sequence of
                :class:`marquee.Message` (or ``{"role", "content"}`` mappings), or a
                :class:`marquee.Recall` input.
            model: The generator's name; empty for the server's default generator.
            images: Encoded images shown before a ``str`` prompt, in order.
            max_new_tokens: Most tokens to generate (server default 256).
            min_new_tokens: End tokens are suppressed until this many are generated.
            temperature: 0 (the default) is greedy; higher samples more freely.
            top_k: Sample among the k most likely tokens only (0: all).
            top_p: Nucleus sampling threshold in (0, 1] (default 1).
            repetition_penalty: Penalty on tokens already seen (default 1: none).
            stop: Generation ends when the text contains one of these (left out of it).
            stop_token_ids: Generation ends after one of these tokens.
            seed: Seed of the request's sampler; equal requests and seeds give equal tokens.
            logprobs: Return each token's log-probability.
            top_logprobs: Also return this many most likely alternatives per token (at most 20).
            adapter: A LoRA adapter loaded with :meth:`load_adapter`.
            timeout: Deadline in seconds.

        Returns:
            The result: ``text``, ``token_ids``, ``finish_reason``, ``usage``, ``timings``
            and per-token ``tokens`` when log-probabilities were asked for.
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
        return self._unary(self._generation.Generate, request, timeout).result  # type: ignore[no-any-return]

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
    ) -> Stream[C.StreamEvent]:
        """Streams an answer as it is generated (``GenerateStream``).

        Takes the arguments of :meth:`generate`. The call starts at once; iterate the
        returned stream for :class:`marquee.GenerationDelta` messages (new tokens and the
        text they add) and then exactly one :class:`marquee.GenerationResult`. Cancelling
        the stream (or leaving its ``with`` block) stops the generation on the server and
        frees its KV cache.

        Example::

            with client.generate_stream("Describe a heist film.") as stream:
                for event in stream:
                    if isinstance(event, marquee.GenerationDelta):
                        print(event.text, end="", flush=True)
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

    def load_adapter(
        self, name: str, path: str, *, model: str = "", timeout: Optional[float] = None
    ) -> generation_pb2.AdapterInfo:
        """Loads a PEFT LoRA adapter directory into a generator under ``name`` (``LoadAdapter``).

        Args:
            name: The adapter's name (letters, digits, ``-``, ``_``, ``.``), for the
                ``adapter`` argument of :meth:`generate`.
            path: The adapter directory on the server (``adapter_config.json``,
                ``adapter_model.safetensors``).
            model: The generator; empty for the default one.
            timeout: Deadline in seconds.
        """
        request = generation_pb2.LoadAdapterRequest(model=model, name=name, path=str(path))
        return self._unary(self._generation.LoadAdapter, request, timeout)  # type: ignore[no-any-return]

    def unload_adapter(self, name: str, *, model: str = "", timeout: Optional[float] = None) -> None:
        """Unloads an adapter; sequences already using it finish with it (``UnloadAdapter``)."""
        request = generation_pb2.UnloadAdapterRequest(model=model, name=name)
        self._unary(self._generation.UnloadAdapter, request, timeout)

    def list_adapters(self, *, model: str = "", timeout: Optional[float] = None) -> List[generation_pb2.AdapterInfo]:
        """The adapters loaded into a generator (``ListAdapters``); empty ``model``: the default one."""
        request = generation_pb2.ListAdaptersRequest(model=model)
        return list(self._unary(self._generation.ListAdapters, request, timeout).adapters)
