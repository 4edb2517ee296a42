"""Convert the model and training settings to and from their wire message."""

from __future__ import annotations

import dataclasses
from typing import Any

from common.config import (
    ConfigError,
    ModelConfig,
    PrivacyConfig,
    SecAggConfig,
    TrainConfig,
)
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


def privacy_config_to_proto(
    dp: PrivacyConfig, aggregate_noise_multiplier: float
) -> pb.PrivacyConfig:
    """Return the PrivacyConfig message of ``dp``.

    ``aggregate_noise_multiplier`` is the resolved domain-level multiplier,
    which the coordinator derives when only ``dp.aggregate_target_epsilon``
    is set, so every client adds the same noise share.
    """
    if not dp.enabled:
        return pb.PrivacyConfig(enabled=False)
    return pb.PrivacyConfig(
        enabled=True,
        accountant=dp.accountant,
        delta=dp.delta,
        target_epsilon=dp.target_epsilon,
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        aggregate_noise_multiplier=aggregate_noise_multiplier,
        aggregate_clip=dp.aggregate_clip,
        aggregate_delta=dp.aggregate_delta,
        honest_domains=dp.honest_domains,
    )


def privacy_config_from_proto(message: pb.PrivacyConfig) -> PrivacyConfig:
    """Rebuild and validate the [dp] settings a coordinator sent.

    Raises
    ------
    ConfigError
        When the coordinator sent settings that fail validation.
    """
    if not message.enabled:
        return PrivacyConfig()
    try:
        return PrivacyConfig(
            enabled=True,
            accountant=message.accountant,
            delta=message.delta,
            target_epsilon=message.target_epsilon,
            noise_multiplier=message.noise_multiplier,
            max_grad_norm=message.max_grad_norm,
            aggregate_noise_multiplier=message.aggregate_noise_multiplier,
            aggregate_clip=message.aggregate_clip,
            aggregate_delta=message.aggregate_delta,
            honest_domains=message.honest_domains,
        )
    except ConfigError as error:
        raise ConfigError(
            f"the coordinator sent invalid [dp] settings: {error}"
        ) from None
