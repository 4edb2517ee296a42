"""Convert the model and training settings to and from their wire message."""

from __future__ import annotations

import dataclasses
from typing import Any

from common.config import ConfigError, ModelConfig, SecAggConfig, TrainConfig
from common.pb import federation_pb2 as pb

PROTOCOL_VERSION = 1


def run_config_to_proto(model: ModelConfig, train: TrainConfig) -> pb.RunConfig:
    """Return the RunConfig message that carries ``model`` and ``train``."""
    values = {**dataclasses.asdict(model), **dataclasses.asdict(train)}
    return pb.RunConfig(**values)


def run_config_from_proto(message: pb.RunConfig) -> tuple[ModelConfig, TrainConfig]:
    """Rebuild and validate the settings a coordinator sent.

    Raises
    ------
    ConfigError
        When the coordinator sent settings that fail validation.
    """

    def pick(cls: type) -> dict[str, Any]:
        return {f.name: getattr(message, f.name) for f in dataclasses.fields(cls)}

    try:
        return ModelConfig(**pick(ModelConfig)), TrainConfig(**pick(TrainConfig))
    except ConfigError as error:
        raise ConfigError(
            f"the coordinator sent an invalid run config: {error}"
        ) from None


def secagg_config_to_proto(secagg: SecAggConfig) -> pb.SecAggConfig:
    """Return the SecAggConfig message that sets how clients aggregate."""
    return pb.SecAggConfig(
        enabled=secagg.enabled,
        mode=secagg.mode,
        levels=secagg.levels,
        neighbours=secagg.neighbours,
    )
