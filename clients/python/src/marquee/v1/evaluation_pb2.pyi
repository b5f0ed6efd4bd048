from marquee.v1 import generation_pb2 as _generation_pb2
from marquee.v1 import retrieval_pb2 as _retrieval_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerationEvalOptions(_message.Message):
    __slots__ = ("per_item", "bertscore_model", "bertscore_layer", "bertscore_idf", "bertscore_baseline_file", "rouge_stemmer")
    PER_ITEM_FIELD_NUMBER: _ClassVar[int]
    BERTSCORE_MODEL_FIELD_NUMBER: _ClassVar[int]
    BERTSCORE_LAYER_FIELD_NUMBER: _ClassVar[int]
    BERTSCORE_IDF_FIELD_NUMBER: _ClassVar[int]
    BERTSCORE_BASELINE_FILE_FIELD_NUMBER: _ClassVar[int]
    ROUGE_STEMMER_FIELD_NUMBER: _ClassVar[int]
    per_item: bool
    bertscore_model: str
    bertscore_layer: int
    bertscore_idf: bool
    bertscore_baseline_file: str
    rouge_stemmer: bool
    def __init__(self, per_item: bool = ..., bertscore_model: _Optional[str] = ..., bertscore_layer: _Optional[int] = ..., bertscore_idf: bool = ..., bertscore_baseline_file: _Optional[str] = ..., rouge_stemmer: bool = ...) -> None: ...

class GenerationEvalItem(_message.Message):
    __slots__ = ("id", "candidate", "generate", "references")
    ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    GENERATE_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    id: str
    candidate: str
    generate: _generation_pb2.GenerateRequest
    references: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., candidate: _Optional[str] = ..., generate: _Optional[_Union[_generation_pb2.GenerateRequest, _Mapping]] = ..., references: _Optional[_Iterable[str]] = ...) -> None: ...

class EvaluateGenerationRequest(_message.Message):
    __slots__ = ("options", "items")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    options: GenerationEvalOptions
    items: _containers.RepeatedCompositeFieldContainer[GenerationEvalItem]
    def __init__(self, options: _Optional[_Union[GenerationEvalOptions, _Mapping]] = ..., items: _Optional[_Iterable[_Union[GenerationEvalItem, _Mapping]]] = ...) -> None: ...

class BleuResult(_message.Message):
    __slots__ = ("score", "precisions", "brevity_penalty", "ratio", "hyp_len", "ref_len", "signature")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    BREVITY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    HYP_LEN_FIELD_NUMBER: _ClassVar[int]
    REF_LEN_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    score: float
    precisions: _containers.RepeatedScalarFieldContainer[float]
    brevity_penalty: float
    ratio: float
    hyp_len: int
    ref_len: int
    signature: str
    def __init__(self, score: _Optional[float] = ..., precisions: _Optional[_Iterable[float]] = ..., brevity_penalty: _Optional[float] = ..., ratio: _Optional[float] = ..., hyp_len: _Optional[int] = ..., ref_len: _Optional[int] = ..., signature: _Optional[str] = ...) -> None: ...

class RougeResult(_message.Message):
    __slots__ = ("precision", "recall", "fmeasure")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    FMEASURE_FIELD_NUMBER: _ClassVar[int]
    precision: float
    recall: float
    fmeasure: float
    def __init__(self, precision: _Optional[float] = ..., recall: _Optional[float] = ..., fmeasure: _Optional[float] = ...) -> None: ...

class BertScoreResult(_message.Message):
    __slots__ = ("precision", "recall", "f1")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    precision: float
    recall: float
    f1: float
    def __init__(self, precision: _Optional[float] = ..., recall: _Optional[float] = ..., f1: _Optional[float] = ...) -> None: ...

class GenerationItemResult(_message.Message):
    __slots__ = ("id", "candidate", "bleu", "rouge", "bertscore")
    class RougeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: RougeResult
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[RougeResult, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    BLEU_FIELD_NUMBER: _ClassVar[int]
    ROUGE_FIELD_NUMBER: _ClassVar[int]
    BERTSCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    candidate: str
    bleu: BleuResult
    rouge: _containers.MessageMap[str, RougeResult]
    bertscore: BertScoreResult
    def __init__(self, id: _Optional[str] = ..., candidate: _Optional[str] = ..., bleu: _Optional[_Union[BleuResult, _Mapping]] = ..., rouge: _Optional[_Mapping[str, RougeResult]] = ..., bertscore: _Optional[_Union[BertScoreResult, _Mapping]] = ...) -> None: ...

class GenerationReport(_message.Message):
    __slots__ = ("items", "bleu", "rouge", "bertscore", "per_item", "bertscore_truncated")
    class RougeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: RougeResult
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[RougeResult, _Mapping]] = ...) -> None: ...
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    BLEU_FIELD_NUMBER: _ClassVar[int]
    ROUGE_FIELD_NUMBER: _ClassVar[int]
    BERTSCORE_FIELD_NUMBER: _ClassVar[int]
    PER_ITEM_FIELD_NUMBER: _ClassVar[int]
    BERTSCORE_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    items: int
    bleu: BleuResult
    rouge: _containers.MessageMap[str, RougeResult]
    bertscore: BertScoreResult
    per_item: _containers.RepeatedCompositeFieldContainer[GenerationItemResult]
    bertscore_truncated: int
    def __init__(self, items: _Optional[int] = ..., bleu: _Optional[_Union[BleuResult, _Mapping]] = ..., rouge: _Optional[_Mapping[str, RougeResult]] = ..., bertscore: _Optional[_Union[BertScoreResult, _Mapping]] = ..., per_item: _Optional[_Iterable[_Union[GenerationItemResult, _Mapping]]] = ..., bertscore_truncated: _Optional[int] = ...) -> None: ...

class EvalQuery(_message.Message):
    __slots__ = ("query_id", "text", "vector", "relevant")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    RELEVANT_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    text: str
    vector: _retrieval_pb2.Vector
    relevant: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, query_id: _Optional[str] = ..., text: _Optional[str] = ..., vector: _Optional[_Union[_retrieval_pb2.Vector, _Mapping]] = ..., relevant: _Optional[_Iterable[str]] = ...) -> None: ...

class EvaluateRetrievalRequest(_message.Message):
    __slots__ = ("collection", "cutoffs", "per_query", "queries")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    CUTOFFS_FIELD_NUMBER: _ClassVar[int]
    PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    collection: str
    cutoffs: _containers.RepeatedScalarFieldContainer[int]
    per_query: bool
    queries: _containers.RepeatedCompositeFieldContainer[EvalQuery]
    def __init__(self, collection: _Optional[str] = ..., cutoffs: _Optional[_Iterable[int]] = ..., per_query: bool = ..., queries: _Optional[_Iterable[_Union[EvalQuery, _Mapping]]] = ...) -> None: ...

class EvaluateRecommendationsRequest(_message.Message):
    __slots__ = ("collection", "cutoffs", "min_rating", "min_high_ratings")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    CUTOFFS_FIELD_NUMBER: _ClassVar[int]
    MIN_RATING_FIELD_NUMBER: _ClassVar[int]
    MIN_HIGH_RATINGS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    cutoffs: _containers.RepeatedScalarFieldContainer[int]
    min_rating: float
    min_high_ratings: int
    def __init__(self, collection: _Optional[str] = ..., cutoffs: _Optional[_Iterable[int]] = ..., min_rating: _Optional[float] = ..., min_high_ratings: _Optional[int] = ...) -> None: ...

class MetricSet(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, float]
    def __init__(self, values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("query_id", "first_relevant_rank")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_RELEVANT_RANK_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    first_relevant_rank: int
    def __init__(self, query_id: _Optional[str] = ..., first_relevant_rank: _Optional[int] = ...) -> None: ...

class EvaluationReport(_message.Message):
    __slots__ = ("queries", "metrics", "baseline", "per_query", "skipped")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    queries: int
    metrics: MetricSet
    baseline: MetricSet
    per_query: _containers.RepeatedCompositeFieldContainer[QueryResult]
    skipped: int
    def __init__(self, queries: _Optional[int] = ..., metrics: _Optional[_Union[MetricSet, _Mapping]] = ..., baseline: _Optional[_Union[MetricSet, _Mapping]] = ..., per_query: _Optional[_Iterable[_Union[QueryResult, _Mapping]]] = ..., skipped: _Optional[int] = ...) -> None: ...

class EvaluationProgress(_message.Message):
    __slots__ = ("done", "total")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class EvaluationEvent(_message.Message):
    __slots__ = ("progress", "report", "generation")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    progress: EvaluationProgress
    report: EvaluationReport
    generation: GenerationReport
    def __init__(self, progress: _Optional[_Union[EvaluationProgress, _Mapping]] = ..., report: _Optional[_Union[EvaluationReport, _Mapping]] = ..., generation: _Optional[_Union[GenerationReport, _Mapping]] = ...) -> None: ...
