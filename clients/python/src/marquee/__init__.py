"""Python client for Marquee, a gRPC model server for multimodal retrieval.

:class:`Client` (blocking) and :class:`AsyncClient` (asyncio) cover every RPC of the
``marquee.v1`` API: embeddings, models, collections and retrieval, recommendations,
evaluation and generation. Failed calls raise :class:`MarqueeError` subclasses. The
generated protobuf modules are in :mod:`marquee.v1`.

Example::

    import marquee

    with marquee.Client("127.0.0.1:50051") as client:
        vectors = client.embed(["a heist film", "a lighthouse in a storm"])
        print(vectors.shape)                        # (2, 384)
"""

from ._connection import TLSConfig
from ._convert import StreamEvent, generate_request
from ._streams import AsyncStream, Stream
from .aio import AsyncClient
from .client import DEFAULT_TARGET, Client
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    MarqueeError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
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
from .v1.evaluation_pb2 import EvaluationReport, GenerationReport
from .v1.generation_pb2 import AdapterInfo, FinishReason, GenerateRequest, GenerationDelta, GenerationResult
from .v1.models_pb2 import ModelInfo, ModelKind
from .v1.retrieval_pb2 import CollectionInfo, Metric

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TARGET",
    "Client",
    "AsyncClient",
    "TLSConfig",
    "Stream",
    "AsyncStream",
    "StreamEvent",
    "generate_request",
    # Errors.
    "MarqueeError",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    # Inputs and results.
    "Contains",
    "EmbedInput",
    "EmbedStreamResult",
    "EvalQuery",
    "Filter",
    "FilterTest",
    "FusionVectors",
    "GenerationEvalItem",
    "GetResult",
    "Hit",
    "Hnsw",
    "Item",
    "Message",
    "Multimodal",
    "PayloadValue",
    "Progress",
    "Prompt",
    "Range",
    "Rating",
    "Recall",
    "StoredFusion",
    "StoredItem",
    "Vector",
    # Protobuf messages returned by the clients.
    "AdapterInfo",
    "CollectionInfo",
    "EvaluationReport",
    "FinishReason",
    "GenerateRequest",
    "GenerationDelta",
    "GenerationReport",
    "GenerationResult",
    "Metric",
    "ModelInfo",
    "ModelKind",
]
