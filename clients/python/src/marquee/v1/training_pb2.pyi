from marquee.v1 import evaluation_pb2 as _evaluation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FineTuneRequest(_message.Message):
    __slots__ = ("collection", "base_model", "output_model", "train", "validation", "epochs", "batch_size", "learning_rate", "weight_decay", "schedule", "warmup_ratio", "max_grad_norm", "scale", "hard_negatives", "projection_dim", "seed", "patience", "threads")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MODEL_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RATIO_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    HARD_NEGATIVES_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_DIM_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    base_model: str
    output_model: str
    train: _containers.RepeatedCompositeFieldContainer[_evaluation_pb2.EvalQuery]
    validation: _containers.RepeatedCompositeFieldContainer[_evaluation_pb2.EvalQuery]
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    schedule: str
    warmup_ratio: float
    max_grad_norm: float
    scale: float
    hard_negatives: int
    projection_dim: int
    seed: int
    patience: int
    threads: int
    def __init__(self, collection: _Optional[str] = ..., base_model: _Optional[str] = ..., output_model: _Optional[str] = ..., train: _Optional[_Iterable[_Union[_evaluation_pb2.EvalQuery, _Mapping]]] = ..., validation: _Optional[_Iterable[_Union[_evaluation_pb2.EvalQuery, _Mapping]]] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., weight_decay: _Optional[float] = ..., schedule: _Optional[str] = ..., warmup_ratio: _Optional[float] = ..., max_grad_norm: _Optional[float] = ..., scale: _Optional[float] = ..., hard_negatives: _Optional[int] = ..., projection_dim: _Optional[int] = ..., seed: _Optional[int] = ..., patience: _Optional[int] = ..., threads: _Optional[int] = ...) -> None: ...

class TrainingStep(_message.Message):
    __slots__ = ("step", "total_steps", "epoch", "loss", "learning_rate", "examples_per_second")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    epoch: int
    loss: float
    learning_rate: float
    examples_per_second: float
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., epoch: _Optional[int] = ..., loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., examples_per_second: _Optional[float] = ...) -> None: ...

class EpochReport(_message.Message):
    __slots__ = ("epoch", "mean_loss", "validation", "seconds")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    mean_loss: float
    validation: _evaluation_pb2.MetricSet
    seconds: float
    def __init__(self, epoch: _Optional[int] = ..., mean_loss: _Optional[float] = ..., validation: _Optional[_Union[_evaluation_pb2.MetricSet, _Mapping]] = ..., seconds: _Optional[float] = ...) -> None: ...

class FineTuneResult(_message.Message):
    __slots__ = ("model", "path", "dimension", "steps", "best_epoch", "before", "after", "stopped_early", "seconds", "examples_per_second")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    STOPPED_EARLY_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    model: str
    path: str
    dimension: int
    steps: int
    best_epoch: int
    before: _evaluation_pb2.MetricSet
    after: _evaluation_pb2.MetricSet
    stopped_early: bool
    seconds: float
    examples_per_second: float
    def __init__(self, model: _Optional[str] = ..., path: _Optional[str] = ..., dimension: _Optional[int] = ..., steps: _Optional[int] = ..., best_epoch: _Optional[int] = ..., before: _Optional[_Union[_evaluation_pb2.MetricSet, _Mapping]] = ..., after: _Optional[_Union[_evaluation_pb2.MetricSet, _Mapping]] = ..., stopped_early: bool = ..., seconds: _Optional[float] = ..., examples_per_second: _Optional[float] = ...) -> None: ...

class FineTuneEvent(_message.Message):
    __slots__ = ("step", "epoch", "result")
    STEP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    step: TrainingStep
    epoch: EpochReport
    result: FineTuneResult
    def __init__(self, step: _Optional[_Union[TrainingStep, _Mapping]] = ..., epoch: _Optional[_Union[EpochReport, _Mapping]] = ..., result: _Optional[_Union[FineTuneResult, _Mapping]] = ...) -> None: ...
