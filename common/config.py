"""Typed, validated run configuration shared by the coordinator and the clients."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from common.secagg.graph import check_threshold

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the key."""


# A domain name is a certificate common name, a file stem and a folder name.
DOMAIN_NAME_PATTERN = re.compile(r"[a-z0-9_-]{1,64}")
RESERVED_NAMES = frozenset({"coordinator"})


def check_domain_name(name: object, key: str = "domain") -> str:
    """Return ``name`` if it is a valid domain name, else raise ConfigError."""
    if not isinstance(name, str) or not DOMAIN_NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"invalid {key} {name!r}: use 1 to 64 lowercase letters, digits, "
            "'_' and '-'"
        )
    if name in RESERVED_NAMES:
        raise ConfigError(f"invalid {key} {name!r}: the name is reserved")
    return name


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the sequence recommender; every domain builds the same global part.

    ``n_subspaces`` (D) and ``n_centroids`` (M) set the product-quantization
    codebook: an item is D codes, each one of M values, and the code-embedding
    table has D * (M + 1) rows because row 0 of each block is padding.
    """

    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    dropout: float = 0.2
    max_seq_len: int = 50
    n_prompt_words: int = 8
    prompt_heads: int = 2
    scoring: str = "cosine"
    temperature: float = 0.07
    n_subspaces: int = 32
    n_centroids: int = 256
    text_dim: int = 384

    def __post_init__(self) -> None:
        _require_positive(
            self,
            "hidden_size",
            "n_layers",
            "n_heads",
            "inner_size",
            "max_seq_len",
            "n_prompt_words",
            "prompt_heads",
            "n_subspaces",
            "n_centroids",
            "text_dim",
        )
        if self.hidden_size % self.n_heads:
            raise ConfigError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by "
                f"model.n_heads ({self.n_heads}); change one of them"
            )
        if self.hidden_size % self.prompt_heads:
            raise ConfigError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by "
                f"model.prompt_heads ({self.prompt_heads}); change one of them"
            )
        if self.text_dim % self.n_subspaces:
            raise ConfigError(
                f"model.text_dim ({self.text_dim}) must be divisible by "
                f"model.n_subspaces ({self.n_subspaces}), because each subspace "
                "quantizes an equal slice of the text embedding"
            )
        if self.scoring not in ("cosine", "dot"):
            raise ConfigError(
                f"model.scoring must be 'cosine' or 'dot', got {self.scoring!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.temperature <= 0:
            raise ConfigError(
                f"model.temperature must be positive, got {self.temperature}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Federated training schedule and the local optimizer of every client."""

    rounds: int = 20
    local_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    kmeans_iterations: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        _require_positive(
            self, "rounds", "local_epochs", "batch_size", "kmeans_iterations"
        )
        if self.learning_rate <= 0:
            raise ConfigError(
                f"train.learning_rate must be positive, got {self.learning_rate}"
            )
        if self.weight_decay < 0:
            raise ConfigError(
                f"train.weight_decay must be >= 0, got {self.weight_decay}"
            )


# Parameter groups of the global encoder, by the first part of a tensor's name.
CLIP_GROUPS = ("code_embedding", "position_embedding", "input_norm", "encoder")


@dataclass(frozen=True)
class PromptConfig:
    """A domain's prompt tuning, run after federated pre-training.

    Local to the domain and not part of the run config, because the prompt
    branches never leave the domain and may differ between domains. With
    ``epochs == 0`` no prompt is tuned and the final model is the global part alone.
    """

    epochs: int = 20
    learning_rate: float = 1e-3
    domain_prompt: bool = True
    user_prompt: bool = True
    # Groups of the global encoder (names from CLIP_GROUPS) that prompt tuning
    # also trains, locally and at finetune_learning_rate. Empty freezes the whole
    # global encoder. Fine-tuned values stay in the domain's saved model and are
    # never uploaded, because prompt tuning runs after the last federated round.
    # Every group at 1e-3 for 20 epochs scored best on ml-1m (docs/benchmarks.md).
    # NOTE: on ml-100k, with a few hundred users per domain, the Transformer
    # layers alone (10 epochs) scored 1% higher over three seeds, so
    # ("encoder",) may suit such domains.
    finetune_global: tuple[str, ...] = CLIP_GROUPS
    finetune_learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        for group in self.finetune_global:
            if group not in CLIP_GROUPS:
                raise ConfigError(
                    f"unknown group {group!r} in prompt.finetune_global; the groups "
                    f"are {list(CLIP_GROUPS)}"
                )
        if self.finetune_learning_rate <= 0:
            raise ConfigError(
                "prompt.finetune_learning_rate must be positive, got "
                f"{self.finetune_learning_rate}"
            )
        if self.epochs < 0:
            raise ConfigError(
                f"prompt.epochs must be >= 0, got {self.epochs}; set it to 0 "
                "to skip prompt tuning"
            )
        if self.learning_rate <= 0:
            raise ConfigError(
                f"prompt.learning_rate must be positive, got {self.learning_rate}"
            )
        if self.epochs and not (self.domain_prompt or self.user_prompt):
            raise ConfigError(
                f"prompt.epochs is {self.epochs} but prompt.domain_prompt and "
                "prompt.user_prompt are both false; enable one or set "
                "prompt.epochs = 0"
            )


@dataclass(frozen=True)
class TLSConfig:
    """Certificate files for mutual TLS; ``insecure`` turns TLS off for tests."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False

    def files(self) -> tuple[Path, Path, Path]:
        """Return (ca, cert, key); raise ConfigError when one is not set."""
        self.check("tls")
        if self.ca is None or self.cert is None or self.key is None:
            raise ConfigError("tls.ca, tls.cert and tls.key must all be set")
        return self.ca, self.cert, self.key

    def check(self, section: str) -> None:
        """Raise ConfigError unless TLS is off or all three files are set."""
        if self.insecure:
            return
        for name in ("ca", "cert", "key"):
            if getattr(self, name) is None:
                raise ConfigError(
                    f"{section}.{name} is missing; set it to a PEM file "
                    "(create them with `fedcdr-coordinator certs`) or set "
                    f"{section}.insecure = true for a local test"
                )


def parse_serial(text: str) -> int:
    """Parse a certificate serial number written in hexadecimal.

    Accepts the forms `openssl x509 -noout -serial` and browsers print:
    ``5F3A...``, ``0x5f3a...`` or ``5f:3a:...``.
    """
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(cleaned, 16)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(
            f"invalid certificate serial {text!r}: write the positive serial "
            "number in hexadecimal, as `openssl x509 -noout -serial` prints it"
        )
    return value


@dataclass(frozen=True)
class RevocationConfig:
    """Revoked client certificates: a CRL file signed by the CA, and serials.

    The coordinator reads the CRL again when the file changes, and both on
    SIGHUP.
    """

    crl: Path | None = None
    serials: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for serial in self.serials:
            parse_serial(serial)


@dataclass(frozen=True)
class TimeoutConfig:
    """Deadlines, in seconds, for each wait of a run."""

    join_s: float = 300.0
    round_s: float = 900.0
    report_s: float = 1800.0
    stage_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("join_s", "round_s", "report_s", "stage_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"timeouts.{name} must be positive, got {getattr(self, name)}"
                )


SECAGG_MODES = ("active", "honest-but-curious")


@dataclass(frozen=True)
class SecAggConfig:
    """Secure aggregation of every upload: masks, thresholds and quantization.

    ``clip`` is the clipping bound of each value of a model delta. The default
    0 picks it per run from the training schedule (see
    :func:`server.rounds.automatic_clip`); ``group_clip`` overrides it for one
    parameter group of :data:`CLIP_GROUPS`.
    """

    enabled: bool = True
    mode: str = "active"
    threshold: int = 0
    neighbours: int = 0
    levels: int = 2**16
    clip: float = 0.0
    group_clip: dict[str, float] = field(default_factory=dict)
    clipped_warning_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.mode not in SECAGG_MODES:
            raise ConfigError(
                f"secagg.mode must be one of {list(SECAGG_MODES)}, got {self.mode!r}"
            )
        if self.threshold < 0:
            raise ConfigError(
                f"secagg.threshold must be 0 (the smallest safe value) or positive, "
                f"got {self.threshold}"
            )
        if self.neighbours < 0 or self.neighbours % 2:
            raise ConfigError(
                f"secagg.neighbours must be 0 (every client) or a positive even "
                f"number, got {self.neighbours}"
            )
        if not 2 <= self.levels <= 2**32:
            raise ConfigError(
                f"secagg.levels must be from 2 to 2**32, got {self.levels}"
            )
        if not (self.clip >= 0 and self.clip < float("inf")):
            raise ConfigError(
                f"secagg.clip must be 0 (automatic) or a positive bound, got {self.clip}"
            )
        for group, bound in self.group_clip.items():
            if group not in CLIP_GROUPS:
                raise ConfigError(
                    f"unknown group {group!r} in secagg.group_clip; the groups are "
                    f"{list(CLIP_GROUPS)}"
                )
            if not (bound > 0 and bound < float("inf")):
                raise ConfigError(
                    f"secagg.group_clip.{group} must be a positive bound, got {bound}"
                )
        if not 0 <= self.clipped_warning_fraction <= 1:
            raise ConfigError(
                "secagg.clipped_warning_fraction must be in [0, 1], got "
                f"{self.clipped_warning_fraction}"
            )


DP_ACCOUNTANTS = ("rdp", "prv")


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy of a run: user-level DP-SGD and noise on the aggregate.

    With ``enabled``, every domain trains the global part with DP-SGD, one
    user's whole sequence being one privacy unit: per-user gradients are
    clipped to ``max_grad_norm`` and Gaussian noise of standard deviation
    ``noise_multiplier * max_grad_norm`` is added to their sum at every step.
    ``noise_multiplier = 0`` derives the multiplier that spends exactly
    ``target_epsilon`` over ``train.rounds``. When both are set, the
    multiplier is fixed and ``target_epsilon`` is a budget: training stops
    after the last round that stays within it.

    ``aggregate_noise_multiplier`` (or ``aggregate_target_epsilon``, read the
    same way) turns on domain-level DP. Each client then clips its round update
    to the L2 norm ``aggregate_clip`` and adds its share of Gaussian noise. The
    shares of ``honest_domains`` domains sum to noise of standard deviation
    ``aggregate_noise_multiplier * aggregate_clip``. ``honest_domains = 0``
    takes ``max(1, min_domains - 1)``.
    """

    enabled: bool = False
    accountant: str = "rdp"
    delta: float = 1e-6
    target_epsilon: float = 0.0
    noise_multiplier: float = 0.0
    max_grad_norm: float = 1.0
    aggregate_noise_multiplier: float = 0.0
    aggregate_target_epsilon: float = 0.0
    aggregate_clip: float = 0.0
    aggregate_delta: float = 1e-3
    honest_domains: int = 0

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        if self.accountant not in DP_ACCOUNTANTS:
            raise ConfigError(
                f"dp.accountant must be one of {list(DP_ACCOUNTANTS)}, "
                f"got {self.accountant!r}"
            )
        for name in (
            "target_epsilon",
            "noise_multiplier",
            "aggregate_noise_multiplier",
            "aggregate_target_epsilon",
            "aggregate_clip",
            "honest_domains",
        ):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise ConfigError(f"dp.{name} must be 0 (off) or positive, got {value}")
        if not (self.max_grad_norm > 0 and self.max_grad_norm < float("inf")):
            raise ConfigError(
                f"dp.max_grad_norm is the per-user clipping bound and must be "
                f"positive, got {self.max_grad_norm}; 1.0 is a common start"
            )
        if self.target_epsilon == 0 and self.noise_multiplier == 0:
            raise ConfigError(
                "dp.enabled is true but dp.target_epsilon and dp.noise_multiplier "
                "are both 0; set dp.target_epsilon (for example 8) or "
                "dp.noise_multiplier (for example 1.0)"
            )
        for name in ("delta", "aggregate_delta"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"dp.{name} must be in (0, 1), got {value}")
        if self.aggregate and self.aggregate_clip == 0:
            raise ConfigError(
                "dp.aggregate_clip is 0, but domain-level noise is on "
                "(dp.aggregate_noise_multiplier or dp.aggregate_target_epsilon); "
                "set dp.aggregate_clip to the L2 bound of a domain's round update"
            )

    @property
    def aggregate(self) -> bool:
        """True when each domain adds its share of noise to its round update."""
        return self.enabled and (
            self.aggregate_noise_multiplier > 0 or self.aggregate_target_epsilon > 0
        )


@dataclass(frozen=True)
class CoordinatorConfig:
    """Configuration of one coordinator process and of the run it drives."""

    run_id: str
    domains: tuple[str, ...]
    listen: str = "127.0.0.1:50051"
    state_dir: Path = Path("runs/coordinator")
    # SQLite run store; None means state_dir/run.sqlite.
    store: Path | None = None
    # host:port of the Prometheus endpoint; empty turns it off.
    metrics_listen: str = ""
    # Serve gRPC server reflection, so grpcurl and similar tools can list the
    # services without the .proto files.
    reflection: bool = False
    min_domains: int = 0
    tls: TLSConfig = field(default_factory=TLSConfig)
    revocation: RevocationConfig = field(default_factory=RevocationConfig)
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    dp: PrivacyConfig = field(default_factory=PrivacyConfig)

    def __post_init__(self) -> None:
        if not self.run_id:
            raise ConfigError("run_id must be a non-empty string")
        if not self.domains:
            raise ConfigError("domains must list at least one domain name")
        for name in self.domains:
            check_domain_name(name, "domain name in domains")
        if len(set(self.domains)) != len(self.domains):
            raise ConfigError(f"domains contains duplicates: {list(self.domains)}")
        quorum = self.min_domains or len(self.domains)
        if not 1 <= quorum <= len(self.domains):
            raise ConfigError(
                f"min_domains must be between 1 and len(domains) = "
                f"{len(self.domains)}, got {self.min_domains}"
            )
        object.__setattr__(self, "min_domains", quorum)
        self.tls.check("tls")
        self._check_secagg()
        self._check_dp()

    def _check_secagg(self) -> None:
        secagg = self.secagg
        if not secagg.enabled:
            return
        n = len(self.domains)
        if n * (secagg.levels - 1) >= 2**32:
            raise ConfigError(
                f"secagg.levels {secagg.levels} is too large for {n} domains: the "
                f"sum of their values must stay below 2**32, so set secagg.levels "
                f"to at most {(2**32 - 1) // n + 1}"
            )
        if secagg.threshold:
            holders = min(secagg.neighbours or n - 1, n - 1) + 1
            try:
                check_threshold(secagg.threshold, holders, secagg.mode)
            except ValueError as error:
                raise ConfigError(str(error)) from None

    def _check_dp(self) -> None:
        dp = self.dp
        if not dp.aggregate:
            return
        n = len(self.domains)
        if dp.aggregate_delta >= 1 / n:
            raise ConfigError(
                f"dp.aggregate_delta {dp.aggregate_delta:g} must be below 1 / the "
                f"number of domains = 1/{n}; lower dp.aggregate_delta"
            )
        if not self.secagg.enabled:
            raise ConfigError(
                "domain-level noise (dp.aggregate_noise_multiplier or "
                "dp.aggregate_target_epsilon) needs secagg.enabled = true, because "
                "without secure aggregation the coordinator sees each update with "
                "only its share of the noise"
            )
        if self.secagg.clip or self.secagg.group_clip:
            raise ConfigError(
                "secagg.clip and secagg.group_clip must be unset with domain-level "
                "noise, because the quantization bound then follows from "
                "dp.aggregate_clip; remove them"
            )
        if dp.honest_domains > self.min_domains:
            raise ConfigError(
                f"dp.honest_domains {dp.honest_domains} exceeds min_domains "
                f"{self.min_domains}, so a round could commit with less noise than "
                "the accountant assumes; lower dp.honest_domains or raise "
                "min_domains"
            )
        if dp.honest_domains == 0:
            resolved = dataclasses.replace(
                dp, honest_domains=max(1, self.min_domains - 1)
            )
            object.__setattr__(self, "dp", resolved)


DISTRIBUTED_BACKENDS = ("gloo",)


@dataclass(frozen=True)
class DistributedConfig:
    """Data-parallel local training of one domain across several processes.

    Used only when the client is started by ``torchrun`` (``WORLD_SIZE`` > 1).
    ``timeout_s`` bounds each collective operation between the processes, so a
    dead or hung process fails the others after at most that long.
    ``idle_timeout_s`` bounds how long ranks other than 0 wait for rank 0's next
    command while rank 0 waits for the coordinator.
    """

    backend: str = "gloo"
    timeout_s: float = 300.0
    idle_timeout_s: float = 7200.0

    def __post_init__(self) -> None:
        if self.backend not in DISTRIBUTED_BACKENDS:
            raise ConfigError(
                f"distributed.backend must be one of {list(DISTRIBUTED_BACKENDS)}, "
                f"got {self.backend!r}; the client trains on CPU, so use 'gloo'"
            )
        for name in ("timeout_s", "idle_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"distributed.{name} must be positive, got {getattr(self, name)}"
                )


@dataclass(frozen=True)
class ServeConfig:
    """The recommendation service that `fedcdr-client serve` runs for its domain.

    ``tls`` is the service's own server certificate and key, and the CA whose
    client certificates it accepts. The domain certificate of ``[tls]`` cannot
    serve, because it is a client certificate. ``workers`` is the number of requests
    handled at once.
    """

    listen: str = "127.0.0.1:50061"
    tls: TLSConfig = field(default_factory=TLSConfig)
    workers: int = 4

    def __post_init__(self) -> None:
        _require_positive(self, "workers")


@dataclass(frozen=True)
class ClientConfig:
    """Configuration of one domain's client process."""

    domain: str
    data_dir: Path
    coordinator: str = "127.0.0.1:50051"
    work_dir: Path = Path("runs/client")
    threads: int = 1
    seed: int = 0
    tls: TLSConfig = field(default_factory=TLSConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    rpc_timeout_s: float = 60.0
    connect_timeout_s: float = 300.0
    serve: ServeConfig = field(default_factory=ServeConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        check_domain_name(self.domain)
        if self.threads <= 0:
            raise ConfigError(f"threads must be positive, got {self.threads}")
        if self.rpc_timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ConfigError("rpc_timeout_s and connect_timeout_s must be positive")
        self.tls.check("tls")


def _require_positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            section = type(obj).__name__.removesuffix("Config").lower()
            raise ConfigError(f"{section}.{name} must be positive, got {value}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and bad types.

    Raises
    ------
    ConfigError
        On an unknown key, a missing required key or a value of the wrong type.
        The message names the dotted key path.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {where}{unknown[0]!r}; valid keys are {sorted(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where}{name}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required key {where}{missing[0]!r}")
    return cls(**kwargs)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, f"{key}.")  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table, got {value!r}")
        return {str(k): _convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a path string, got {value!r}")
        return Path(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if type(value) is not hint:
            raise ConfigError(f"{key} must be of type {hint.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")


def load_toml(cls: type[T], path: Path, overrides: dict[str, Any] | None = None) -> T:
    """Load dataclass ``cls`` from a TOML file; relative paths resolve against it.

    ``overrides`` (from command-line flags) are merged into the file's tables
    before validation, so a flag can satisfy a check the file alone would fail.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    try:
        config = from_dict(cls, data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return _resolve_paths(config, path.parent)


def _resolve_paths(obj: T, base: Path) -> T:
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if isinstance(value, Path) and not value.is_absolute():
            changes[f.name] = base / value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[f.name] = _resolve_paths(value, base)
    return dataclasses.replace(obj, **changes) if changes else obj  # type: ignore[type-var]
