"""Builds protobuf requests from the clients' Python arguments and converts responses
back; shared by the blocking and the asyncio client so that both send the same bytes."""

from __future__ import annotations

import json
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Dict,
    Generic,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
    Union,
)

import grpc
import numpy as np
import numpy.typing as npt

from .errors import error_for
from .types import (
    Contains,
    EmbedInput,
    EmbedStreamResult,
    EvalQuery,
    Filter,
    FilterTest,
    FusionVectors,
    GenerationEvalItem,
    GetResult,
    Hit,
    Hnsw,
    Item,
    Message,
    Multimodal,
    PayloadValue,
    Progress,
    Prompt,
    Range,
    Rating,
    Recall,
    StoredFusion,
    StoredItem,
    Vector,
)
from .v1 import embedding_pb2, evaluation_pb2, generation_pb2, models_pb2, retrieval_pb2, training_pb2

T = TypeVar("T")

METRICS = {
    "cosine": retrieval_pb2.METRIC_COSINE,
    "inner_product": retrieval_pb2.METRIC_INNER_PRODUCT,
    "l2": retrieval_pb2.METRIC_L2,
}


class _Batcher(Generic[T]):
    """Groups items into lists of at most ``size``, starting a new list wherever ``key``
    changes, and yields at least one (maybe empty) list."""

    def __init__(self, size: int, key: Optional[Callable[[T], Any]]) -> None:
        self._size = size
        self._key = key
        self._batch: List[T] = []
        self._sent = False

    def add(self, item: T) -> Optional[List[T]]:
        """Adds ``item``; returns the batch it closed, if any."""
        key = self._key
        closed = None
        if self._batch and (len(self._batch) == self._size or (key is not None and key(item) != key(self._batch[-1]))):
            closed, self._batch, self._sent = self._batch, [], True
        self._batch.append(item)
        return closed

    def rest(self) -> Optional[List[T]]:
        """The last batch: the items left, or an empty list if no batch was closed."""
        return self._batch if self._batch or not self._sent else None


def batches(items: Iterable[T], size: int, key: Optional[Callable[[T], Any]] = None) -> Iterator[List[T]]:
    """``items`` in lists of at most ``size``, lazily, a new list also wherever ``key``
    changes; at least one (maybe empty) list. Checks ``size`` at once."""
    check_batch_size(size)
    return _batches(items, _Batcher(size, key))


def _batches(items: Iterable[T], batcher: _Batcher[T]) -> Iterator[List[T]]:
    for item in items:
        closed = batcher.add(item)
        if closed is not None:
            yield closed
    rest = batcher.rest()
    if rest is not None:
        yield rest


def abatches(
    items: Union[Iterable[T], AsyncIterable[T]], size: int, key: Optional[Callable[[T], Any]] = None
) -> AsyncIterator[List[T]]:
    """:func:`batches` over a synchronous or asynchronous iterable."""
    check_batch_size(size)
    return _abatches(items, _Batcher(size, key))


async def _abatches(items: Union[Iterable[T], AsyncIterable[T]], batcher: _Batcher[T]) -> AsyncIterator[List[T]]:
    async for item in aiterate(items):
        closed = batcher.add(item)
        if closed is not None:
            yield closed
    rest = batcher.rest()
    if rest is not None:
        yield rest


async def aiterate(items: Union[Iterable[T], AsyncIterable[T]]) -> AsyncIterator[T]:
    """A synchronous or asynchronous iterable as an asynchronous iterator."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def check_batch_size(size: int) -> None:
    """Raises ``ValueError`` unless ``size`` is a positive integer."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {size!r}")


def vector_values(vector: Vector, what: str = "vector") -> List[float]:
    """A one-dimensional vector as a list of floats."""
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"a {what} must be one-dimensional, not of shape {array.shape}")
    return array.tolist()  # type: ignore[no-any-return]


def is_vector(value: object) -> bool:
    """Whether ``value`` is a vector (a NumPy array or a non-string sequence)."""
    return isinstance(value, np.ndarray) or (
        isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))
    )


# Embedding.


def embed_inputs(inputs: Union[EmbedInput, Sequence[EmbedInput]]) -> List[embedding_pb2.EmbedInput]:
    """The protobuf inputs for one input or a sequence of them."""
    if isinstance(inputs, (str, bytes, bytearray, Multimodal, FusionVectors, StoredFusion)):
        inputs = [inputs]
    return [embed_input(i) for i in inputs]


def embed_input(value: EmbedInput) -> embedding_pb2.EmbedInput:
    """One protobuf input."""
    if isinstance(value, str):
        return embedding_pb2.EmbedInput(text=value)
    if isinstance(value, (bytes, bytearray)):
        return embedding_pb2.EmbedInput(image=bytes(value))
    if isinstance(value, Multimodal):
        return embedding_pb2.EmbedInput(multimodal=multimodal(value))
    if isinstance(value, FusionVectors):
        return embedding_pb2.EmbedInput(
            fusion_vectors=embedding_pb2.FusionVectors(
                text=vector_values(value.text),
                poster=[] if value.poster is None else vector_values(value.poster),
                thumbnail=[] if value.thumbnail is None else vector_values(value.thumbnail),
            )
        )
    if isinstance(value, StoredFusion):
        return embedding_pb2.EmbedInput(
            stored=embedding_pb2.StoredFusionInput(
                item_id=value.item_id,
                text_collection=value.text_collection,
                poster_collection=value.poster_collection,
                thumbnail_collection=value.thumbnail_collection,
            )
        )
    raise TypeError(
        f"cannot embed a {type(value).__name__}: pass str, bytes, Multimodal, FusionVectors or StoredFusion"
    )


def multimodal(value: Multimodal) -> embedding_pb2.MultimodalInput:
    """The protobuf form of a multimodal input."""
    return embedding_pb2.MultimodalInput(text=value.text, poster=value.poster, thumbnail=value.thumbnail)


def embed_request(
    inputs: Union[EmbedInput, Sequence[EmbedInput]], model: str, truncate: bool, request_id: str = ""
) -> embedding_pb2.EmbedRequest:
    """An Embed request."""
    return embedding_pb2.EmbedRequest(
        model=model,
        inputs=embed_inputs(inputs),
        truncation=embedding_pb2.TRUNCATION_END if truncate else embedding_pb2.TRUNCATION_NONE,
        request_id=request_id,
    )


def embeddings(response: embedding_pb2.EmbedResponse) -> npt.NDArray[np.float32]:
    """The response's vectors as a ``(inputs, dimension)`` float32 array."""
    out = np.empty((len(response.embeddings), response.dimension), dtype=np.float32)
    for row, embedding in zip(out, response.embeddings):
        row[:] = embedding.values
    return out


def stream_result(response: embedding_pb2.EmbedStreamResponse) -> EmbedStreamResult:
    """One EmbedStream answer."""
    index = int(response.request_id)
    if response.WhichOneof("result") == "error":
        return EmbedStreamResult(index, None, error_for(response.error.code, response.error.message))
    return EmbedStreamResult(index, embeddings(response.response), None)


# Models.


def load_model_request(
    name: str, path: str, plugin: str, options: Optional[Mapping[str, Any]]
) -> models_pb2.LoadModelRequest:
    """A LoadModel request, the plugin options as JSON."""
    return models_pb2.LoadModelRequest(
        name=name, plugin=plugin, path=str(path), config_json=json.dumps(dict(options)) if options else ""
    )


# Retrieval.


def create_collection_request(
    name: str, dimension: int, metric: str, index: Union[str, Hnsw], model: str, device: str
) -> retrieval_pb2.CreateCollectionRequest:
    """A CreateCollection request."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    if isinstance(index, Hnsw):
        config = retrieval_pb2.IndexConfig(
            hnsw=retrieval_pb2.HnswIndex(m=index.m, ef_construction=index.ef_construction, ef_search=index.ef_search)
        )
    elif index == "hnsw":
        config = retrieval_pb2.IndexConfig(hnsw=retrieval_pb2.HnswIndex())
    elif index == "exact":
        config = retrieval_pb2.IndexConfig(exact=retrieval_pb2.ExactIndex())
    else:
        raise ValueError(f"index must be 'exact', 'hnsw' or an Hnsw, not {index!r}")
    return retrieval_pb2.CreateCollectionRequest(
        name=name, dimension=dimension, metric=METRICS[metric], index=config, model=model, device=device
    )


def value(v: PayloadValue) -> retrieval_pb2.Value:
    """A payload value's protobuf form."""
    if isinstance(v, bool):
        return retrieval_pb2.Value(bool_value=v)
    if isinstance(v, (int, np.integer)):
        return retrieval_pb2.Value(int_value=int(v))
    if isinstance(v, (float, np.floating)):
        return retrieval_pb2.Value(double_value=float(v))
    if isinstance(v, str):
        return retrieval_pb2.Value(string_value=v)
    if isinstance(v, Sequence) and all(isinstance(s, str) for s in v):
        return retrieval_pb2.Value(list_value=retrieval_pb2.StringList(values=list(v)))
    raise TypeError(f"a payload value must be str, int, float, bool or a list of str, not {v!r}")


def from_value(v: retrieval_pb2.Value) -> Optional[PayloadValue]:
    """A protobuf payload value as Python; ``None`` for a kind this client does not know."""
    kind = v.WhichOneof("kind")
    if kind == "list_value":
        return list(v.list_value.values)
    if kind is None:
        return None
    return getattr(v, kind)  # type: ignore[no-any-return]


def payload(fields: Mapping[str, PayloadValue]) -> Dict[str, retrieval_pb2.Value]:
    """A payload's protobuf form."""
    return {k: value(v) for k, v in fields.items()}


def from_payload(fields: Mapping[str, retrieval_pb2.Value]) -> Dict[str, PayloadValue]:
    """A protobuf payload as Python, leaving out values of kinds this client does not
    know (a newer server's)."""
    decoded = {k: from_value(v) for k, v in fields.items()}
    return {k: v for k, v in decoded.items() if v is not None}


def item(value: Item) -> retrieval_pb2.Item:
    """An item's protobuf form."""
    if not isinstance(value, Item):
        raise TypeError(f"upsert takes marquee.Item values, not {type(value).__name__}")
    content = value.content
    fields = payload(value.payload)
    if isinstance(content, str):
        return retrieval_pb2.Item(id=value.id, text=content, payload=fields)
    if isinstance(content, (bytes, bytearray)):
        return retrieval_pb2.Item(id=value.id, image=bytes(content), payload=fields)
    if isinstance(content, Multimodal):
        return retrieval_pb2.Item(id=value.id, multimodal=multimodal(content), payload=fields)
    if is_vector(content):
        return retrieval_pb2.Item(
            id=value.id, vector=retrieval_pb2.Vector(values=vector_values(content)), payload=fields
        )
    raise TypeError(
        f"item {value.id!r}: content must be a vector, str, bytes or Multimodal, not {type(content).__name__}"
    )


def upsert_request(collection: str, batch: Sequence[Item]) -> retrieval_pb2.UpsertRequest:
    """One Upsert message."""
    return retrieval_pb2.UpsertRequest(collection=collection, items=[item(i) for i in batch])


def condition(field: str, test: FilterTest) -> retrieval_pb2.Condition:
    """One filter condition."""
    if isinstance(test, Contains):
        return retrieval_pb2.Condition(field=field, contains=test.value)
    if isinstance(test, Range):
        return retrieval_pb2.Condition(
            field=field, range=retrieval_pb2.Range(gte=test.gte, gt=test.gt, lte=test.lte, lt=test.lt)
        )
    return retrieval_pb2.Condition(field=field, equals=value(test))


def filter_proto(conditions: Optional[Filter]) -> Optional[retrieval_pb2.Filter]:
    """A filter's protobuf form; ``None`` for no filter."""
    if conditions is None:
        return None
    pairs = conditions.items() if isinstance(conditions, Mapping) else conditions
    return retrieval_pb2.Filter(must=[condition(f, t) for f, t in pairs])


def search_request(
    collection: str,
    query: Union[str, bytes, Multimodal, Vector, None],
    item_id: Optional[str],
    k: int,
    conditions: Optional[Filter],
    with_payload: bool,
) -> retrieval_pb2.SearchRequest:
    """A Search request by exactly one of ``query`` and ``item_id``."""
    request = retrieval_pb2.SearchRequest(
        collection=collection, k=k, filter=filter_proto(conditions), with_payload=with_payload
    )
    if (query is None) == (item_id is None):
        raise ValueError("search needs exactly one of query and item_id")
    if item_id is not None:
        request.item_id = item_id
    elif isinstance(query, str):
        request.text = query
    elif isinstance(query, (bytes, bytearray)):
        request.image = bytes(query)
    elif isinstance(query, Multimodal):
        request.multimodal.CopyFrom(multimodal(query))
    elif is_vector(query):
        request.vector.values.extend(vector_values(query))  # type: ignore[arg-type]
    else:
        raise TypeError(f"a query must be a vector, str, bytes or Multimodal, not {type(query).__name__}")
    return request


def hits(response: retrieval_pb2.SearchResponse) -> List[Hit]:
    """Search or Recommend hits, best first."""
    return [Hit(h.id, h.score, from_payload(h.payload)) for h in response.hits]


def recommend_request(
    collection: str,
    user_id: Optional[str],
    ratings: Optional[Mapping[str, float]],
    k: int,
    min_rating: Optional[float],
    exclude_seen: Optional[bool],
    conditions: Optional[Filter],
    with_payload: bool,
) -> retrieval_pb2.RecommendRequest:
    """A Recommend request for a stored user or inline ratings."""
    if (user_id is None) == (ratings is None):
        raise ValueError("recommend needs exactly one of user_id and ratings")
    request = retrieval_pb2.RecommendRequest(
        collection=collection, k=k, filter=filter_proto(conditions), with_payload=with_payload
    )
    if min_rating is not None:
        request.min_rating = min_rating
    if exclude_seen is not None:
        request.exclude_seen = exclude_seen
    if user_id is not None:
        request.user_id = user_id
    else:
        assert ratings is not None
        request.ratings.ratings.extend(retrieval_pb2.Rating(item_id=i, rating=r) for i, r in ratings.items())
    return request


def rating_user(r: Rating) -> str:
    """The user of a rating: the key RecordRatings messages are batched by."""
    return checked_rating(r).user_id


def checked_rating(r: Rating) -> Rating:
    """``r``, or ``TypeError`` when it is no :class:`marquee.Rating`."""
    if not isinstance(r, Rating):
        raise TypeError(f"record_ratings takes marquee.Rating values, not {type(r).__name__}")
    return r


def rating_request(collection: str, batch: Sequence[Rating]) -> retrieval_pb2.RecordRatingsRequest:
    """One RecordRatings message: ratings of one user (see :func:`rating_user`)."""
    ratings = [checked_rating(r) for r in batch]
    return retrieval_pb2.RecordRatingsRequest(
        collection=collection,
        user_id=ratings[0].user_id if ratings else "",
        ratings=[retrieval_pb2.Rating(item_id=r.item_id, rating=r.rating, timestamp=r.timestamp) for r in ratings],
    )


def get_result(response: retrieval_pb2.GetResponse, with_vectors: bool, with_texts: bool = False) -> GetResult:
    """A Get answer."""
    return GetResult(
        items=[
            StoredItem(
                i.id,
                np.array(i.vector, dtype=np.float32) if with_vectors else None,
                from_payload(i.payload),
                i.text if with_texts else None,
            )
            for i in response.items
        ],
        missing=list(response.missing),
    )


class ReembedCollector:
    """Follows a re-embedding's progress stream: reports progress, keeps the result."""

    def __init__(self, progress: Optional[Progress]) -> None:
        """Reports ``(done, total)`` items to ``progress`` if given."""
        self._progress = progress
        self._collection: Optional[retrieval_pb2.CollectionInfo] = None

    def add(self, message: retrieval_pb2.ReembedCollectionResponse) -> None:
        """Handles one message."""
        if self._progress is not None:
            self._progress(message.done, message.total)
        if message.HasField("collection"):
            self._collection = message.collection

    def collection(self) -> retrieval_pb2.CollectionInfo:
        """The re-embedded collection; :class:`marquee.Unknown` when the stream ended without it."""
        if self._collection is None:
            raise error_for(grpc.StatusCode.UNKNOWN, "the re-embedding ended without its result")
        return self._collection


# Evaluation.


def eval_query(q: EvalQuery) -> evaluation_pb2.EvalQuery:
    """One evaluation query's protobuf form."""
    if not isinstance(q, EvalQuery):
        raise TypeError(f"evaluate_retrieval takes marquee.EvalQuery values, not {type(q).__name__}")
    if isinstance(q.query, str):
        return evaluation_pb2.EvalQuery(query_id=q.query_id, text=q.query, relevant=list(q.relevant))
    return evaluation_pb2.EvalQuery(
        query_id=q.query_id, vector=retrieval_pb2.Vector(values=vector_values(q.query)), relevant=list(q.relevant)
    )


def retrieval_eval_request(
    batch: Sequence[EvalQuery], first: bool, collection: str, cutoffs: Sequence[int], per_query: bool
) -> evaluation_pb2.EvaluateRetrievalRequest:
    """One EvaluateRetrieval message; the first carries the options."""
    request = evaluation_pb2.EvaluateRetrievalRequest(queries=[eval_query(q) for q in batch])
    if first:
        request.collection = collection
        request.cutoffs.extend(cutoffs)
        request.per_query = per_query
    return request


def generation_eval_item(i: GenerationEvalItem) -> evaluation_pb2.GenerationEvalItem:
    """One generation evaluation item's protobuf form."""
    if not isinstance(i, GenerationEvalItem):
        raise TypeError(f"evaluate_generation takes marquee.GenerationEvalItem values, not {type(i).__name__}")
    if (i.candidate is None) == (i.generate is None):
        raise ValueError(f"item {i.id!r} needs exactly one of candidate and generate")
    return evaluation_pb2.GenerationEvalItem(
        id=i.id, candidate=i.candidate, generate=i.generate, references=list(i.references)
    )


def generation_eval_request(
    batch: Sequence[GenerationEvalItem], options: Optional[evaluation_pb2.GenerationEvalOptions]
) -> evaluation_pb2.EvaluateGenerationRequest:
    """One EvaluateGeneration message; the first carries the options."""
    return evaluation_pb2.EvaluateGenerationRequest(options=options, items=[generation_eval_item(i) for i in batch])


class ReportCollector:
    """Follows an evaluation's event stream: reports progress, keeps the report."""

    def __init__(self, kind: str, progress: Optional[Progress]) -> None:
        """Collects the ``kind`` report (``"report"`` or ``"generation"``)."""
        self._kind = kind
        self._progress = progress
        self._report: Optional[Any] = None

    def add(self, event: evaluation_pb2.EvaluationEvent) -> None:
        """Handles one event."""
        kind = event.WhichOneof("event")
        if kind == "progress":
            if self._progress is not None:
                self._progress(event.progress.done, event.progress.total)
        elif kind == self._kind:
            self._report = getattr(event, kind)

    def report(self) -> Any:
        """The report; :class:`marquee.Unknown` when the stream ended without one."""
        if self._report is None:
            raise error_for(grpc.StatusCode.UNKNOWN, "the evaluation ended without a report")
        return self._report


# Generation.


def content_parts(content: Union[str, Sequence[Union[str, bytes]]]) -> List[generation_pb2.ContentPart]:
    """A message's content as protobuf parts."""
    if isinstance(content, str):
        return [generation_pb2.ContentPart(text=content)]
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(generation_pb2.ContentPart(text=part))
        elif isinstance(part, (bytes, bytearray)):
            parts.append(generation_pb2.ContentPart(image=bytes(part)))
        else:
            raise TypeError(f"a content part must be str (text) or bytes (an image), not {type(part).__name__}")
    return parts


def chat_message(m: Union[Message, Mapping[str, Any]]) -> generation_pb2.ChatMessage:
    """One chat message's protobuf form."""
    if isinstance(m, Message):
        role, content = m.role, m.content
    elif isinstance(m, Mapping):
        role, content = m["role"], m["content"]
    else:
        raise TypeError(f"a chat message must be a marquee.Message or a mapping, not {type(m).__name__}")
    return generation_pb2.ChatMessage(role=role, content=content_parts(content))


def generate_request(
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
) -> generation_pb2.GenerateRequest:
    """Builds a ``GenerateRequest``, as the clients' ``generate`` methods send it.

    Useful for :class:`marquee.GenerationEvalItem` items whose candidate the server
    generates. The arguments are those of :meth:`marquee.Client.generate`.
    """
    request = generation_pb2.GenerateRequest(
        model=model,
        parameters=generation_pb2.GenerationParameters(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            stop=list(stop),
            stop_token_ids=list(stop_token_ids),
            seed=seed,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            adapter=adapter,
        ),
    )
    if images and not isinstance(prompt, str):
        raise ValueError("images go with a str prompt; put them in the messages' content otherwise")
    if isinstance(prompt, str):
        content: List[Union[str, bytes]] = [*images, prompt]
        request.chat.messages.append(generation_pb2.ChatMessage(role="user", content=content_parts(content)))
    elif isinstance(prompt, Recall):
        request.recall.CopyFrom(
            generation_pb2.RecallInput(
                scene_images=list(prompt.scene_images), ocr_text=prompt.ocr_text, transcript=prompt.transcript
            )
        )
    else:
        request.chat.messages.extend(chat_message(m) for m in prompt)
    return request


StreamEvent = Union[generation_pb2.GenerationDelta, generation_pb2.GenerationResult]


def stream_event(response: generation_pb2.GenerateStreamResponse) -> StreamEvent:
    """A GenerateStream message's delta or result."""
    if response.WhichOneof("event") == "delta":
        return response.delta
    return response.result


# Training.


def fine_tune_requests(
    collection: str,
    base_model: str,
    output_model: str,
    train: Sequence[EvalQuery],
    validation: Sequence[EvalQuery],
    settings: Mapping[str, Any],
    batch_size: int = 256,
) -> Iterator[training_pb2.FineTuneRequest]:
    """The FineTune request stream: the settings, then the training and validation queries."""
    for q in list(train) + list(validation):
        if not isinstance(q, EvalQuery) or not isinstance(q.query, str):
            raise TypeError("fine_tune takes marquee.EvalQuery values with text queries")
    first = training_pb2.FineTuneRequest(collection=collection, base_model=base_model, output_model=output_model)
    for name, value in settings.items():
        if value is not None:
            setattr(first, name, value)
    yield first
    for column, queries in (("train", list(train)), ("validation", list(validation))):
        for start in range(0, len(queries), batch_size):
            message = training_pb2.FineTuneRequest()
            getattr(message, column).extend(eval_query(q) for q in queries[start : start + batch_size])
            yield message


class FineTuneCollector:
    """Follows a fine-tuning stream: reports steps and epochs, keeps the result."""

    def __init__(
        self,
        progress: Optional[Progress],
        on_epoch: Optional[Callable[[training_pb2.EpochReport], None]],
    ) -> None:
        """Reports ``(step, total_steps)`` to ``progress`` and each epoch to ``on_epoch``."""
        self._progress = progress
        self._on_epoch = on_epoch
        self._result: Optional[training_pb2.FineTuneResult] = None

    def add(self, event: training_pb2.FineTuneEvent) -> None:
        """Handles one event."""
        kind = event.WhichOneof("event")
        if kind == "step" and self._progress is not None:
            self._progress(event.step.step, event.step.total_steps)
        elif kind == "epoch" and self._on_epoch is not None:
            self._on_epoch(event.epoch)
        elif kind == "result":
            self._result = event.result

    def result(self) -> training_pb2.FineTuneResult:
        """The result; :class:`marquee.Unknown` when the stream ended without it."""
        if self._result is None:
            raise error_for(grpc.StatusCode.UNKNOWN, "the fine-tuning ended without its result")
        return self._result
