"""Plain Python types the clients take and return.

Inputs are small frozen dataclasses (or built-in values where one is unambiguous: a
``str`` is a text, ``bytes`` an encoded image, a sequence of floats or a NumPy array a
vector). Results with a natural Python form come back as dataclasses holding NumPy
arrays and decoded payloads; the others (model and collection information, generation
results, evaluation reports) are the protobuf messages of :mod:`marquee.v1`, re-exported
from :mod:`marquee` (e.g. :class:`marquee.ModelInfo`), whose fields are documented in
``proto/marquee/v1/*.proto``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from .errors import MarqueeError
from .v1 import generation_pb2

__all__ = [
    "Vector",
    "PayloadValue",
    "Multimodal",
    "FusionVectors",
    "StoredFusion",
    "EmbedInput",
    "EmbedStreamResult",
    "Item",
    "Hnsw",
    "Contains",
    "Range",
    "FilterTest",
    "Filter",
    "Hit",
    "StoredItem",
    "GetResult",
    "Rating",
    "EvalQuery",
    "GenerationEvalItem",
    "Message",
    "Recall",
    "Prompt",
    "Progress",
]

Vector = Union[Sequence[float], npt.NDArray[np.floating[Any]]]
"""A vector: a sequence of floats or a one-dimensional NumPy array."""

PayloadValue = Union[str, int, float, bool, Sequence[str]]
"""A payload field's value: string, integer, double, boolean, or list of strings.

Returned payloads hold ``str``, ``int``, ``float``, ``bool`` or ``list[str]``."""


@dataclass(frozen=True)
class Multimodal:
    """A text with optional images, embedded by a pipeline in one call.

    An empty ``poster`` or ``thumbnail`` means that image is absent.
    """

    text: str
    """UTF-8 text; required."""
    poster: bytes = b""
    """Encoded poster image (JPEG, PNG, WebP), or empty."""
    thumbnail: bytes = b""
    """Encoded trailer-thumbnail image, or empty."""


@dataclass(frozen=True)
class FusionVectors:
    """Ready-made embeddings for a fusion model to fuse."""

    text: Vector
    """The text embedding, of the fusion model's text width."""
    poster: Optional[Vector] = None
    """The poster embedding (the model's image width), or ``None`` when absent."""
    thumbnail: Optional[Vector] = None
    """The thumbnail embedding, or ``None`` when absent."""


@dataclass(frozen=True)
class StoredFusion:
    """An item's embeddings as stored in collections, for a fusion model to fuse."""

    item_id: str
    """The item's id in each collection."""
    text_collection: str
    """Collection holding its text embedding."""
    poster_collection: str = ""
    """Collection holding its poster embedding, or empty."""
    thumbnail_collection: str = ""
    """Collection holding its thumbnail embedding, or empty."""


EmbedInput = Union[str, bytes, Multimodal, FusionVectors, StoredFusion]
"""One thing to embed: ``str`` is a text, ``bytes`` an encoded image (JPEG, PNG, WebP);
the dataclasses select the other input kinds. Which kinds a model takes depends on its
:class:`marquee.ModelKind`."""


@dataclass(frozen=True)
class EmbedStreamResult:
    """The answer to one request of :meth:`marquee.Client.embed_stream`.

    Exactly one of ``embeddings`` and ``error`` is set: a failed request does not end
    the stream.
    """

    index: int
    """Position of the request in the iterable given to ``embed_stream`` (0-based)."""
    embeddings: Optional[npt.NDArray[np.float32]]
    """One row per input of that request, ``float32``."""
    error: Optional[MarqueeError]
    """Why the request failed."""


@dataclass(frozen=True)
class Item:
    """An item to upsert into a collection.

    ``content`` is stored as a vector when it is a sequence of floats or a NumPy array;
    a ``str`` (text), ``bytes`` (an encoded image) or :class:`Multimodal` is embedded
    with the collection's model.
    """

    id: str
    """The item's id; an existing item with it is replaced."""
    content: Union[str, bytes, Multimodal, Vector]
    """The vector, or what the collection's model embeds."""
    payload: Mapping[str, PayloadValue] = field(default_factory=dict)
    """Typed fields to store and filter on."""


@dataclass(frozen=True)
class Hnsw:
    """An approximate HNSW index; zero fields take the server's defaults."""

    m: int = 0
    """Links per node (default 16)."""
    ef_construction: int = 0
    """Candidate list size while building (default 200)."""
    ef_search: int = 0
    """Candidate list size while searching (default 64; raised to k when smaller)."""


@dataclass(frozen=True)
class Contains:
    """Filter test: the field is a list of strings containing ``value``."""

    value: str


@dataclass(frozen=True)
class Range:
    """Filter test: the field is a number within the bounds; ``None`` bounds are open."""

    gte: Optional[float] = None
    gt: Optional[float] = None
    lte: Optional[float] = None
    lt: Optional[float] = None


FilterTest = Union[str, int, float, bool, Contains, Range]
"""A test on one payload field: a plain value tests equality."""

Filter = Union[Mapping[str, FilterTest], Iterable[Tuple[str, FilterTest]]]
"""Conditions that must all hold, as ``{field: test}`` or ``(field, test)`` pairs (pairs
allow several tests on one field), e.g.
``{"year": Range(gte=1990), "genres": Contains("Horror"), "language": "en"}``."""


@dataclass(frozen=True)
class Hit:
    """One search or recommendation result."""

    id: str
    score: float
    """Higher is better (cosine, inner product, or negated squared L2 distance)."""
    payload: Dict[str, PayloadValue]
    """The item's payload; empty unless ``with_payload`` was asked for."""


@dataclass(frozen=True)
class StoredItem:
    """An item as stored in a collection."""

    id: str
    vector: Optional[npt.NDArray[np.float32]]
    """As stored (L2-normalised in cosine collections); ``None`` unless ``with_vectors``."""
    payload: Dict[str, PayloadValue]
    text: Optional[str] = None
    """The text the item was embedded from (empty for items not upserted as text);
    ``None`` unless ``with_texts``."""


@dataclass(frozen=True)
class GetResult:
    """The answer of :meth:`marquee.Client.get`."""

    items: List[StoredItem]
    """The items found, in request order."""
    missing: List[str]
    """Requested ids that do not exist."""


@dataclass(frozen=True)
class Rating:
    """A user's rating of an item, for :meth:`marquee.Client.record_ratings`."""

    user_id: str
    item_id: str
    rating: float
    timestamp: int = 0
    """Unix seconds; 0 when unknown."""


@dataclass(frozen=True)
class EvalQuery:
    """A query of a retrieval evaluation with its relevant item ids."""

    query_id: str
    query: Union[str, Vector]
    """A text (embedded with the collection's model) or a vector."""
    relevant: Sequence[str]
    """Ids of the relevant items; they must exist in the collection."""


@dataclass(frozen=True)
class GenerationEvalItem:
    """An item of a generation evaluation: a candidate text, or a request the server
    generates it with, and one or more references."""

    id: str
    references: Sequence[str]
    candidate: Optional[str] = None
    """The text to score; leave ``None`` and set ``generate`` to have the server write it."""
    generate: Optional[generation_pb2.GenerateRequest] = None
    """A request to generate the candidate with (see :func:`marquee.generate_request`)."""


@dataclass(frozen=True)
class Message:
    """A chat message: a role (``system``, ``user``, ``assistant``) and its content.

    ``content`` is a text, or parts in order: ``str`` parts are texts, ``bytes`` parts
    encoded images (JPEG, PNG, WebP).
    """

    role: str
    content: Union[str, Sequence[Union[str, bytes]]]


@dataclass(frozen=True)
class Recall:
    """A recall input: what a viewer saw of a film, rendered by the model's recall
    instruction (the images in order, then the OCR text and transcript)."""

    scene_images: Sequence[bytes] = ()
    """Up to 30 encoded scene images."""
    ocr_text: str = ""
    transcript: str = ""


Prompt = Union[str, Sequence[Union[Message, Mapping[str, Any]]], Recall]
"""What to generate from: a ``str`` is one user message; a sequence of :class:`Message`
(or ``{"role": ..., "content": ...}`` mappings of the same shape) is a chat; a
:class:`Recall` is a recall input."""

Progress = Callable[[int, int], None]
"""An evaluation progress callback, called with (done, total) as the server reports."""
