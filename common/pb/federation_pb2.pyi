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

class SegmentKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEGMENT_KIND_UNSPECIFIED: _ClassVar[SegmentKind]
    SEGMENT_KIND_QUANTIZED: _ClassVar[SegmentKind]
    SEGMENT_KIND_INTEGER: _ClassVar[SegmentKind]

class SecAggStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEC_AGG_STAGE_UNSPECIFIED: _ClassVar[SecAggStage]
    SEC_AGG_STAGE_ADVERTISE_KEYS: _ClassVar[SecAggStage]
    SEC_AGG_STAGE_SHARE_KEYS: _ClassVar[SecAggStage]
    SEC_AGG_STAGE_MASKED_INPUT: _ClassVar[SecAggStage]
    SEC_AGG_STAGE_CONSISTENCY_CHECK: _ClassVar[SecAggStage]
    SEC_AGG_STAGE_UNMASK: _ClassVar[SecAggStage]
TASK_KIND_UNSPECIFIED: TaskKind
TASK_KIND_WAIT: TaskKind
TASK_KIND_CODEBOOK_MOMENTS: TaskKind
TASK_KIND_CODEBOOK_STEP: TaskKind
TASK_KIND_TRAIN: TaskKind
TASK_KIND_FINISH: TaskKind
TASK_KIND_DONE: TaskKind
TASK_KIND_ABORT: TaskKind
SEGMENT_KIND_UNSPECIFIED: SegmentKind
SEGMENT_KIND_QUANTIZED: SegmentKind
SEGMENT_KIND_INTEGER: SegmentKind
SEC_AGG_STAGE_UNSPECIFIED: SecAggStage
SEC_AGG_STAGE_ADVERTISE_KEYS: SecAggStage
SEC_AGG_STAGE_SHARE_KEYS: SecAggStage
SEC_AGG_STAGE_MASKED_INPUT: SecAggStage
SEC_AGG_STAGE_CONSISTENCY_CHECK: SecAggStage
SEC_AGG_STAGE_UNMASK: SecAggStage

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

class SecAggConfig(_message.Message):
    __slots__ = ("enabled", "mode", "levels", "neighbours")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    mode: str
    levels: int
    neighbours: int
    def __init__(self, enabled: _Optional[bool] = ..., mode: _Optional[str] = ..., levels: _Optional[int] = ..., neighbours: _Optional[int] = ...) -> None: ...

class PrivacyConfig(_message.Message):
    __slots__ = ("enabled", "accountant", "delta", "target_epsilon", "noise_multiplier", "max_grad_norm", "aggregate_noise_multiplier", "aggregate_clip", "aggregate_delta", "honest_domains")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTANT_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TARGET_EPSILON_FIELD_NUMBER: _ClassVar[int]
    NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_CLIP_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_DELTA_FIELD_NUMBER: _ClassVar[int]
    HONEST_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    accountant: str
    delta: float
    target_epsilon: float
    noise_multiplier: float
    max_grad_norm: float
    aggregate_noise_multiplier: float
    aggregate_clip: float
    aggregate_delta: float
    honest_domains: int
    def __init__(self, enabled: _Optional[bool] = ..., accountant: _Optional[str] = ..., delta: _Optional[float] = ..., target_epsilon: _Optional[float] = ..., noise_multiplier: _Optional[float] = ..., max_grad_norm: _Optional[float] = ..., aggregate_noise_multiplier: _Optional[float] = ..., aggregate_clip: _Optional[float] = ..., aggregate_delta: _Optional[float] = ..., honest_domains: _Optional[int] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("run_id", "config", "secagg", "dp")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    DP_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    config: RunConfig
    secagg: SecAggConfig
    dp: PrivacyConfig
    def __init__(self, run_id: _Optional[str] = ..., config: _Optional[_Union[RunConfig, _Mapping]] = ..., secagg: _Optional[_Union[SecAggConfig, _Mapping]] = ..., dp: _Optional[_Union[PrivacyConfig, _Mapping]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("domain", "run_id")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    domain: str
    run_id: str
    def __init__(self, domain: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("kind", "task_id", "round", "step", "vector_length", "message", "secagg")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VECTOR_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    kind: TaskKind
    task_id: str
    round: int
    step: int
    vector_length: int
    message: str
    secagg: SecAggTask
    def __init__(self, kind: _Optional[_Union[TaskKind, str]] = ..., task_id: _Optional[str] = ..., round: _Optional[int] = ..., step: _Optional[int] = ..., vector_length: _Optional[int] = ..., message: _Optional[str] = ..., secagg: _Optional[_Union[SecAggTask, _Mapping]] = ...) -> None: ...

class VectorSegment(_message.Message):
    __slots__ = ("kind", "length", "bound", "weight_offset", "weight_repeat")
    KIND_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    BOUND_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_REPEAT_FIELD_NUMBER: _ClassVar[int]
    kind: SegmentKind
    length: int
    bound: float
    weight_offset: int
    weight_repeat: int
    def __init__(self, kind: _Optional[_Union[SegmentKind, str]] = ..., length: _Optional[int] = ..., bound: _Optional[float] = ..., weight_offset: _Optional[int] = ..., weight_repeat: _Optional[int] = ...) -> None: ...

class SecAggTask(_message.Message):
    __slots__ = ("aggregation_round", "weight_cap", "segments")
    AGGREGATION_ROUND_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_CAP_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    aggregation_round: int
    weight_cap: int
    segments: _containers.RepeatedCompositeFieldContainer[VectorSegment]
    def __init__(self, aggregation_round: _Optional[int] = ..., weight_cap: _Optional[int] = ..., segments: _Optional[_Iterable[_Union[VectorSegment, _Mapping]]] = ...) -> None: ...

class KeyAdvertisement(_message.Message):
    __slots__ = ("domain", "encryption_public", "mask_public", "signature", "certificate_pem")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    MASK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    domain: str
    encryption_public: bytes
    mask_public: bytes
    signature: bytes
    certificate_pem: bytes
    def __init__(self, domain: _Optional[str] = ..., encryption_public: _Optional[bytes] = ..., mask_public: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., certificate_pem: _Optional[bytes] = ...) -> None: ...

class AdvertiseKeysRequest(_message.Message):
    __slots__ = ("domain", "run_id", "task_id", "advertisement")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ADVERTISEMENT_FIELD_NUMBER: _ClassVar[int]
    domain: str
    run_id: str
    task_id: str
    advertisement: KeyAdvertisement
    def __init__(self, domain: _Optional[str] = ..., run_id: _Optional[str] = ..., task_id: _Optional[str] = ..., advertisement: _Optional[_Union[KeyAdvertisement, _Mapping]] = ...) -> None: ...

class AdvertiseKeysResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EncryptedShare(_message.Message):
    __slots__ = ("sender", "receiver", "ciphertext")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    sender: str
    receiver: str
    ciphertext: bytes
    def __init__(self, sender: _Optional[str] = ..., receiver: _Optional[str] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class ShareKeysRequest(_message.Message):
    __slots__ = ("domain", "run_id", "task_id", "shares")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    domain: str
    run_id: str
    task_id: str
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    def __init__(self, domain: _Optional[str] = ..., run_id: _Optional[str] = ..., task_id: _Optional[str] = ..., shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ...) -> None: ...

class ShareKeysResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConsistencyCheckRequest(_message.Message):
    __slots__ = ("domain", "run_id", "task_id", "signature")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    domain: str
    run_id: str
    task_id: str
    signature: bytes
    def __init__(self, domain: _Optional[str] = ..., run_id: _Optional[str] = ..., task_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ConsistencyCheckResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevealedShare(_message.Message):
    __slots__ = ("owner", "share")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    share: bytes
    def __init__(self, owner: _Optional[str] = ..., share: _Optional[bytes] = ...) -> None: ...

class UnmaskRequest(_message.Message):
    __slots__ = ("domain", "run_id", "task_id", "self_mask_shares", "mask_key_shares")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SELF_MASK_SHARES_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_SHARES_FIELD_NUMBER: _ClassVar[int]
    domain: str
    run_id: str
    task_id: str
    self_mask_shares: _containers.RepeatedCompositeFieldContainer[RevealedShare]
    mask_key_shares: _containers.RepeatedCompositeFieldContainer[RevealedShare]
    def __init__(self, domain: _Optional[str] = ..., run_id: _Optional[str] = ..., task_id: _Optional[str] = ..., self_mask_shares: _Optional[_Iterable[_Union[RevealedShare, _Mapping]]] = ..., mask_key_shares: _Optional[_Iterable[_Union[RevealedShare, _Mapping]]] = ...) -> None: ...

class UnmaskResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SurvivorSignature(_message.Message):
    __slots__ = ("domain", "signature")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    domain: str
    signature: bytes
    def __init__(self, domain: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class GetSecAggStageRequest(_message.Message):
    __slots__ = ("domain", "run_id", "task_id", "stage")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    domain: str
    run_id: str
    task_id: str
    stage: SecAggStage
    def __init__(self, domain: _Optional[str] = ..., run_id: _Optional[str] = ..., task_id: _Optional[str] = ..., stage: _Optional[_Union[SecAggStage, str]] = ...) -> None: ...

class GetSecAggStageResponse(_message.Message):
    __slots__ = ("ready", "advertisements", "threshold", "shares", "survivors", "signatures", "dropped")
    READY_FIELD_NUMBER: _ClassVar[int]
    ADVERTISEMENTS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    advertisements: _containers.RepeatedCompositeFieldContainer[KeyAdvertisement]
    threshold: int
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    survivors: _containers.RepeatedScalarFieldContainer[str]
    signatures: _containers.RepeatedCompositeFieldContainer[SurvivorSignature]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ready: _Optional[bool] = ..., advertisements: _Optional[_Iterable[_Union[KeyAdvertisement, _Mapping]]] = ..., threshold: _Optional[int] = ..., shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ..., survivors: _Optional[_Iterable[str]] = ..., signatures: _Optional[_Iterable[_Union[SurvivorSignature, _Mapping]]] = ..., dropped: _Optional[_Iterable[str]] = ...) -> None: ...

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
