from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_TEXT_ENCODER: _ClassVar[ModelKind]
    MODEL_KIND_IMAGE_ENCODER: _ClassVar[ModelKind]
    MODEL_KIND_FUSION: _ClassVar[ModelKind]
    MODEL_KIND_GENERATOR: _ClassVar[ModelKind]
    MODEL_KIND_PIPELINE: _ClassVar[ModelKind]
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_TEXT_ENCODER: ModelKind
MODEL_KIND_IMAGE_ENCODER: ModelKind
MODEL_KIND_FUSION: ModelKind
MODEL_KIND_GENERATOR: ModelKind
MODEL_KIND_PIPELINE: ModelKind

class PipelineInfo(_message.Message):
    __slots__ = ("text_model", "image_model", "fusion_model", "store_text", "store_poster", "store_thumbnail")
    TEXT_MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    FUSION_MODEL_FIELD_NUMBER: _ClassVar[int]
    STORE_TEXT_FIELD_NUMBER: _ClassVar[int]
    STORE_POSTER_FIELD_NUMBER: _ClassVar[int]
    STORE_THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    text_model: str
    image_model: str
    fusion_model: str
    store_text: str
    store_poster: str
    store_thumbnail: str
    def __init__(self, text_model: _Optional[str] = ..., image_model: _Optional[str] = ..., fusion_model: _Optional[str] = ..., store_text: _Optional[str] = ..., store_poster: _Optional[str] = ..., store_thumbnail: _Optional[str] = ...) -> None: ...

class BatchingInfo(_message.Message):
    __slots__ = ("max_batch_size", "max_batch_tokens", "max_queue_delay_us", "max_queue_inputs")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_US_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_INPUTS_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    max_batch_tokens: int
    max_queue_delay_us: int
    max_queue_inputs: int
    def __init__(self, max_batch_size: _Optional[int] = ..., max_batch_tokens: _Optional[int] = ..., max_queue_delay_us: _Optional[int] = ..., max_queue_inputs: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "plugin", "plugin_version", "kind", "dimension", "max_input_tokens", "path", "is_default", "batching", "device", "queued_inputs", "pipeline")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_INPUTS_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    name: str
    plugin: str
    plugin_version: str
    kind: ModelKind
    dimension: int
    max_input_tokens: int
    path: str
    is_default: bool
    batching: BatchingInfo
    device: str
    queued_inputs: int
    pipeline: PipelineInfo
    def __init__(self, name: _Optional[str] = ..., plugin: _Optional[str] = ..., plugin_version: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., dimension: _Optional[int] = ..., max_input_tokens: _Optional[int] = ..., path: _Optional[str] = ..., is_default: bool = ..., batching: _Optional[_Union[BatchingInfo, _Mapping]] = ..., device: _Optional[str] = ..., queued_inputs: _Optional[int] = ..., pipeline: _Optional[_Union[PipelineInfo, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("name", "plugin", "path", "config_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    plugin: str
    path: str
    config_json: str
    def __init__(self, name: _Optional[str] = ..., plugin: _Optional[str] = ..., path: _Optional[str] = ..., config_json: _Optional[str] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
