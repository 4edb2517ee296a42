from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_KIND_UNSPECIFIED: _ClassVar[TaskKind]
    TASK_KIND_WAIT: _ClassVar[TaskKind]
    TASK_KIND_CODEBOOK_MOMENTS: _ClassVar[TaskKind]
    TASK_KIND_CODEBOOK_STEP: _ClassVar[TaskKind]
    TASK_KIND_TRAIN: _ClassVar[TaskKind]
    TASK_KIND_FINISH: _ClassVar[TaskKind]
    TASK_KIND_DONE: _ClassVar[TaskKind]
    TASK_KIND_ABORT: _ClassVar[TaskKind]
TASK_KIND_UNSPECIFIED: TaskKind
TASK_KIND_WAIT: TaskKind
TASK_KIND_CODEBOOK_MOMENTS: TaskKind
TASK_KIND_CODEBOOK_STEP: TaskKind
TASK_KIND_TRAIN: TaskKind
TASK_KIND_FINISH: TaskKind
TASK_KIND_DONE: TaskKind
TASK_KIND_ABORT: TaskKind

class RunConfig(_message.Message):
    __slots__ = ("hidden_size", "n_layers", "n_heads", "inner_size", "dropout", "max_seq_len", "n_prompt_words", "prompt_heads", "scoring", "temperature", "n_subspaces", "n_centroids", "text_dim", "rounds", "local_epochs", "batch_size", "learning_rate", "weight_decay", "kmeans_iterations", "seed")
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    N_LAYERS_FIELD_NUMBER: _ClassVar[int]
    N_HEADS_FIELD_NUMBER: _ClassVar[int]
    INNER_SIZE_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    N_PROMPT_WORDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_HEADS_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    N_SUBSPACES_FIELD_NUMBER: _ClassVar[int]
    N_CENTROIDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_DIM_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    KMEANS_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    hidden_size: int
    n_layers: int
    n_heads: int
    inner_size: int
    dropout: float
    max_seq_len: int
    n_prompt_words: int
    prompt_heads: int
    scoring: str
    temperature: float
    n_subspaces: int
    n_centroids: int
    text_dim: int
    rounds: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    kmeans_iterations: int
    seed: int
    def __init__(self, hidden_size: _Optional[int] = ..., n_layers: _Optional[int] = ..., n_heads: _Optional[int] = ..., inner_size: _Optional[int] = ..., dropout: _Optional[float] = ..., max_seq_len: _Optional[int] = ..., n_prompt_words: _Optional[int] = ..., prompt_heads: _Optional[int] = ..., scoring: _Optional[str] = ..., temperature: _Optional[float] = ..., n_subspaces: _Optional[int] = ..., n_centroids: _Optional[int] = ..., text_dim: _Optional[int] = ..., rounds: _Optional[int] = ..., local_epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., weight_decay: _Optional[float] = ..., kmeans_iterations: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class DomainStats(_message.Message):
    __slots__ = ("n_users", "n_items", "n_interactions")
    N_USERS_FIELD_NUMBER: _ClassVar[int]
    N_ITEMS_FIELD_NUMBER: _ClassVar[int]
    N_INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    n_users: int
    n_items: int
    n_interactions: int
    def __init__(self, n_users: _Optional[int] = ..., n_items: _Optional[int] = ..., n_interactions: _Optional[int] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("domain", "protocol_version", "stats")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    domain: str
    protocol_version: int
    stats: DomainStats
    def __init__(self, domain: _Optional[str] = ..., protocol_version: _Optional[int] = ..., stats: _Optional[_Union[DomainStats, _Mapping]] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("run_id", "config")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    config: RunConfig
    def __init__(self, run_id: _Optional[str] = ..., config: _Optional[_Union[RunConfig, _Mapping]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("domain", "run_id")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    domain: str
    run_id: str
    def __init__(self, domain: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("kind", "task_id", "round", "step", "vector_length", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VECTOR_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: TaskKind
    task_id: str
    round: int
    step: int
    vector_length: int
    message: str
    def __init__(self, kind: _Optional[_Union[TaskKind, str]] = ..., task_id: _Optional[str] = ..., round: _Optional[int] = ..., step: _Optional[int] = ..., vector_length: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("domain", "run_id", "task_id")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    domain: str
    run_id: str
    task_id: str
    def __init__(self, domain: _Optional[str] = ..., run_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape", "offset", "nbytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    nbytes: int
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ..., nbytes: _Optional[int] = ...) -> None: ...

class TensorManifest(_message.Message):
    __slots__ = ("tensors", "total_bytes", "sha256")
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    total_bytes: int
    sha256: bytes
    def __init__(self, tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("manifest", "index", "count", "data")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    manifest: TensorManifest
    index: int
    count: int
    data: bytes
    def __init__(self, manifest: _Optional[_Union[TensorManifest, _Mapping]] = ..., index: _Optional[int] = ..., count: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("domain", "run_id", "task_id", "encoding", "total_bytes", "count", "sha256")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    domain: str
    run_id: str
    task_id: str
    encoding: str
    total_bytes: int
    count: int
    sha256: bytes
    def __init__(self, domain: _Optional[str] = ..., run_id: _Optional[str] = ..., task_id: _Optional[str] = ..., encoding: _Optional[str] = ..., total_bytes: _Optional[int] = ..., count: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadResponse(_message.Message):
    __slots__ = ("received_bytes",)
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    received_bytes: int
    def __init__(self, received_bytes: _Optional[int] = ...) -> None: ...

class RoundMetrics(_message.Message):
    __slots__ = ("round", "valid", "test", "valid_loss", "train_loss")
    class ValidEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TestEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ROUND_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    VALID_LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    round: int
    valid: _containers.ScalarMap[str, float]
    test: _containers.ScalarMap[str, float]
    valid_loss: float
    train_loss: float
    def __init__(self, round: _Optional[int] = ..., valid: _Optional[_Mapping[str, float]] = ..., test: _Optional[_Mapping[str, float]] = ..., valid_loss: _Optional[float] = ..., train_loss: _Optional[float] = ...) -> None: ...

class ReportMetricsRequest(_message.Message):
    __slots__ = ("domain", "run_id", "model", "rounds", "final")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    domain: str
    run_id: str
    model: str
    rounds: _containers.RepeatedCompositeFieldContainer[RoundMetrics]
    final: bool
    def __init__(self, domain: _Optional[str] = ..., run_id: _Optional[str] = ..., model: _Optional[str] = ..., rounds: _Optional[_Iterable[_Union[RoundMetrics, _Mapping]]] = ..., final: _Optional[bool] = ...) -> None: ...

class ReportMetricsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
