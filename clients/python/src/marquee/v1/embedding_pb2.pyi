from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Truncation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRUNCATION_UNSPECIFIED: _ClassVar[Truncation]
    TRUNCATION_END: _ClassVar[Truncation]
    TRUNCATION_NONE: _ClassVar[Truncation]
TRUNCATION_UNSPECIFIED: Truncation
TRUNCATION_END: Truncation
TRUNCATION_NONE: Truncation

class EmbedInput(_message.Message):
    __slots__ = ("text", "image", "multimodal", "fusion_vectors", "stored")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MULTIMODAL_FIELD_NUMBER: _ClassVar[int]
    FUSION_VECTORS_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    multimodal: MultimodalInput
    fusion_vectors: FusionVectors
    stored: StoredFusionInput
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., multimodal: _Optional[_Union[MultimodalInput, _Mapping]] = ..., fusion_vectors: _Optional[_Union[FusionVectors, _Mapping]] = ..., stored: _Optional[_Union[StoredFusionInput, _Mapping]] = ...) -> None: ...

class MultimodalInput(_message.Message):
    __slots__ = ("text", "poster", "thumbnail")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    POSTER_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    text: str
    poster: bytes
    thumbnail: bytes
    def __init__(self, text: _Optional[str] = ..., poster: _Optional[bytes] = ..., thumbnail: _Optional[bytes] = ...) -> None: ...

class FusionVectors(_message.Message):
    __slots__ = ("text", "poster", "thumbnail")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    POSTER_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    text: _containers.RepeatedScalarFieldContainer[float]
    poster: _containers.RepeatedScalarFieldContainer[float]
    thumbnail: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, text: _Optional[_Iterable[float]] = ..., poster: _Optional[_Iterable[float]] = ..., thumbnail: _Optional[_Iterable[float]] = ...) -> None: ...

class StoredFusionInput(_message.Message):
    __slots__ = ("item_id", "text_collection", "poster_collection", "thumbnail_collection")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    POSTER_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    text_collection: str
    poster_collection: str
    thumbnail_collection: str
    def __init__(self, item_id: _Optional[str] = ..., text_collection: _Optional[str] = ..., poster_collection: _Optional[str] = ..., thumbnail_collection: _Optional[str] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("model", "inputs", "truncation", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    inputs: _containers.RepeatedCompositeFieldContainer[EmbedInput]
    truncation: Truncation
    request_id: str
    def __init__(self, model: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[EmbedInput, _Mapping]]] = ..., truncation: _Optional[_Union[Truncation, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "truncated_inputs")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_INPUTS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    truncated_inputs: int
    def __init__(self, input_tokens: _Optional[int] = ..., truncated_inputs: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_us", "tokenize_us", "inference_us", "total_us")
    QUEUE_US_FIELD_NUMBER: _ClassVar[int]
    TOKENIZE_US_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_US_FIELD_NUMBER: _ClassVar[int]
    TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    queue_us: int
    tokenize_us: int
    inference_us: int
    total_us: int
    def __init__(self, queue_us: _Optional[int] = ..., tokenize_us: _Optional[int] = ..., inference_us: _Optional[int] = ..., total_us: _Optional[int] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("model", "embeddings", "dimension", "usage", "timings")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    model: str
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    dimension: int
    usage: Usage
    timings: Timings
    def __init__(self, model: _Optional[str] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., dimension: _Optional[int] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EmbedStreamResponse(_message.Message):
    __slots__ = ("request_id", "response", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    response: EmbedResponse
    error: StreamError
    def __init__(self, request_id: _Optional[str] = ..., response: _Optional[_Union[EmbedResponse, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ...) -> None: ...
