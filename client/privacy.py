"""User-level DP-SGD of a domain's local training, and the noise on its update.

One user's whole sequence is one privacy unit: the model's loss covers every
position of a user's sequence, so a user is one row of a batch, and the
gradient of that row is clipped as a whole. Only the global part trains here.
The local prompt never trains in these rounds, and prompt tuning (after the
federated rounds) trains it without noise, because it never leaves the domain.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from opacus.accountants import create_accountant
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch import Tensor

from client.securenoise import SecureGaussian
from client.train import make_batches
from common.accounting import (
    Mechanism,
    PrivacySettingError,
    check_user_delta,
    epsilon,
    noise_share_std,
    user_mechanism,
)
from common.config import PrivacyConfig, TrainConfig
from common.model import SequenceRecommender

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DomainPrivacy:
    """Settings of a domain's private training.

    Attributes
    ----------
    dp : PrivacyConfig
        The run's [dp] settings, as the coordinator sent them.
    n_users : int
        The domain's user count, the one it reported when it joined, so the
        coordinator's accountant uses the same sampling rate.
    aggregate_noise_multiplier : float
        The resolved domain-level noise multiplier, 0 for none.
    noise_seed : int, optional
        Seed of the noise generators, for tests and benchmarks only. None (the
        default) keys them from the operating system's generator.
    """

    dp: PrivacyConfig
    n_users: int
    aggregate_noise_multiplier: float = 0.0
    noise_seed: int | None = None


class SecureNoiseOptimizer(DPOptimizer):
    """Opacus's DPOptimizer with its Gaussian noise drawn from a SecureGaussian.

    Opacus draws the noise with a torch generator unless ``secure_mode`` is on,
    and that needs the torchcsprng package. The noise is drawn on the CPU in
    float64 and moved to each parameter's device and dtype.
    """

    def __init__(self, *args, noise: SecureGaussian, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.noise = noise

    def add_noise(self) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        for parameter in self.params:
            summed = parameter.summed_grad
            # The same checks as DPOptimizer.add_noise (opacus 1.6.0), so a
            # gradient is never noised twice.
            _check_processed_flag(summed)
            draw = self.noise.normal(0.0, std, tuple(summed.shape))
            noise = torch.from_numpy(draw).to(device=summed.device, dtype=summed.dtype)
            parameter.grad = (summed + noise).view_as(parameter)
            _mark_as_processed(summed)


class PrivateTraining:
    """DP-SGD over the global part of a domain's model, with Opacus's optimizer.

    Each step draws every user with probability q = batch_size / n_users
    (Poisson sampling, the sampling the accountant assumes), computes each
    drawn user's gradient with its own backward pass, and lets
    :class:`opacus.optimizers.DPOptimizer` clip each user's gradient to
    ``dp.max_grad_norm``, add Gaussian noise of standard deviation
    ``noise_multiplier * max_grad_norm`` to their sum and divide by the
    expected batch size. An Opacus accountant counts every step.

    Raises
    ------
    common.accounting.PrivacySettingError
        When ``dp.delta`` is not below 1 / n_users or the noise multiplier
        cannot reach ``dp.target_epsilon``.
    """

    def __init__(
        self,
        model: SequenceRecommender,
        train: TrainConfig,
        privacy: DomainPrivacy,
        domain: str = "",
    ) -> None:
        dp = privacy.dp
        check_user_delta(dp, privacy.n_users, domain)
        self.mechanism: Mechanism = user_mechanism(dp, train, privacy.n_users)
        self.privacy = privacy
        self.train = train
        self.domain = domain
        seed = privacy.noise_seed
        self.update_noise = SecureGaussian(seed, "update")

        self.parameters = [p for p in model.global_part.parameters() if p.requires_grad]
        self.optimizer = SecureNoiseOptimizer(
            torch.optim.AdamW(
                self.parameters, lr=train.learning_rate, weight_decay=train.weight_decay
            ),
            noise=SecureGaussian(seed, "dp-sgd"),
            noise_multiplier=self.mechanism.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            expected_batch_size=train.batch_size,
        )
        self.accountant = create_accountant(mechanism=dp.accountant)
        self.optimizer.attach_step_hook(
            self.accountant.get_optimizer_hook_fn(
                sample_rate=self.mechanism.sample_rate
            )
        )
        logger.info(
            "domain=%s DP-SGD noise_multiplier=%.4g max_grad_norm=%g sample_rate=%.4g "
            "steps_per_round=%d",
            domain,
            self.mechanism.noise_multiplier,
            dp.max_grad_norm,
            self.mechanism.sample_rate,
            self.mechanism.steps_per_round,
        )

    @property
    def epsilon(self) -> float:
        """Epsilon this domain's DP-SGD has spent so far, at ``dp.delta``."""
        if not self.accountant.history:
            return 0.0
        return float(self.accountant.get_epsilon(delta=self.privacy.dp.delta))

    def per_user_gradients(
        self, model: SequenceRecommender, sequences: Sequence[Sequence[int]]
    ) -> tuple[list[Tensor], float, int]:
        """Compute each user's gradient of the global part, one backward pass each.

        Returns
        -------
        gradients : list of Tensor
            One tensor per parameter of the global part, shape [B, *parameter
            shape], row b the gradient of the mean loss over user b's positions.
        loss_sum, positions : float, int
            The summed cross entropy over every position of the B users, and
            the number of those positions.
        """
        device = model.item_codes.device
        max_seq_len = model.config.max_seq_len
        rows: list[list[Tensor]] = [[] for _ in self.parameters]
        loss_sum = 0.0
        positions = 0
        for sequence in sequences:
            items, targets = next(make_batches([sequence], max_seq_len, 1))
            for parameter in self.parameters:
                parameter.grad = None
            loss = model.loss(items.to(device), targets.to(device))
            loss.backward()
            counted = int((targets != 0).sum())
            loss_sum += float(loss.detach()) * counted
            positions += counted
            for index, parameter in enumerate(self.parameters):
                grad = parameter.grad
                rows[index].append(
                    torch.zeros_like(parameter) if grad is None else grad.detach()
                )
        gradients = [
            torch.stack(row) if row else parameter.new_zeros((0, *parameter.shape))
            for row, parameter in zip(rows, self.parameters, strict=True)
        ]
        return gradients, loss_sum, positions

    def train_round(
        self,
        model: SequenceRecommender,
        sequences: Sequence[Sequence[int]],
        generator: torch.Generator,
    ) -> float:
        """Run one round of DP-SGD steps and return the mean loss per position.

        The loss is measured on the drawn users before each step, in the
        same passes that compute their gradients.

        Raises
        ------
        common.accounting.PrivacySettingError
            Before any step, when this domain's own accountant shows that the
            round would exceed ``dp.target_epsilon``. That happens when the
            coordinator requests a round again (after a restart, say), because
            the coordinator counts each round once but every run of it spends
            budget.
        """
        self.check_budget()
        usable = [sequence for sequence in sequences if len(sequence) >= 2]
        if not usable:
            raise ValueError(
                "sequences has no sequence with 2 or more items, so there is nothing "
                "to train on"
            )
        model.train()
        started = time.perf_counter()
        total_loss = 0.0
        total_positions = 0
        for _ in range(self.mechanism.steps_per_round):
            drawn = torch.rand(len(usable), generator=generator)
            chosen = [
                usable[i]
                for i in torch.nonzero(drawn < self.mechanism.sample_rate).flatten()
            ]
            self.optimizer.zero_grad(set_to_none=True)
            samples, loss, positions = self.per_user_gradients(model, chosen)
            for parameter, sample in zip(self.parameters, samples, strict=True):
                parameter.grad = None
                parameter.grad_sample = sample  # type: ignore[attr-defined]
            self.optimizer.step()
            total_loss += loss
            total_positions += positions
        self.optimizer.zero_grad(set_to_none=True)
        logger.info(
            "domain=%s DP-SGD round: %d steps in %.1f s, epsilon=%.4g at delta=%g",
            self.domain,
            self.mechanism.steps_per_round,
            time.perf_counter() - started,
            self.epsilon,
            self.privacy.dp.delta,
        )
        return total_loss / total_positions if total_positions else float("nan")

    def check_budget(self) -> None:
        """Raise PrivacySettingError when one more round would exceed the budget."""
        mechanism = self.mechanism
        if math.isinf(mechanism.budget):
            return
        # Every step of this trainer has the same noise multiplier and sampling
        # rate, so the steps so far and this round's compose as one run, the
        # same computation as the coordinator's.
        steps = sum(entry[2] for entry in self.accountant.history)
        after = epsilon(
            self.privacy.dp.accountant,
            mechanism.noise_multiplier,
            mechanism.sample_rate,
            steps + mechanism.steps_per_round,
            self.privacy.dp.delta,
        )
        if after > mechanism.budget:
            raise PrivacySettingError(
                f"domain {self.domain!r} stops training: one more round would "
                f"raise its epsilon from {self.epsilon:.4g} to {after:.4g}, above "
                f"dp.target_epsilon = {mechanism.budget:g}, because a round ran "
                "again; raise dp.target_epsilon or start a new run"
            )

    @property
    def adds_update_noise(self) -> bool:
        """True when this domain clips and noises its round update."""
        return self.privacy.aggregate_noise_multiplier > 0

    def noisy_update(self, delta: np.ndarray) -> np.ndarray:
        """Clip ``delta`` to ``dp.aggregate_clip`` and add this domain's noise share.

        Returns
        -------
        numpy.ndarray
            float64 ``[len(delta) + 1]``: the noised delta followed by the
            weight 1. The federation then averages the domains' deltas with
            equal weights, so one domain moves the sum by at most the clip.
        """
        return noisy_update(
            delta,
            self.privacy.dp,
            self.privacy.aggregate_noise_multiplier,
            self.update_noise,
        )


def clip_l2(vector: np.ndarray, bound: float) -> np.ndarray:
    """Scale ``vector`` down to L2 norm ``bound`` when it is longer."""
    norm = float(np.linalg.norm(vector))
    if norm <= bound:
        return vector
    return vector * (bound / norm)


def noisy_update(
    delta: np.ndarray,
    dp: PrivacyConfig,
    noise_multiplier: float,
    rng: SecureGaussian | np.random.Generator,
) -> np.ndarray:
    """Clip a round delta to ``dp.aggregate_clip`` and add one domain's noise share.

    The share has standard deviation ``noise_share_std``, so the shares of
    ``dp.honest_domains`` domains sum to the noise the accountant assumes.

    ``rng`` is the domain's SecureGaussian, or any object with the same
    ``normal`` method, such as a numpy Generator in tests.
    """
    clipped = clip_l2(np.asarray(delta, dtype=np.float64), dp.aggregate_clip)
    std = noise_share_std(dp, noise_multiplier)
    noised = clipped + rng.normal(0.0, std, size=clipped.shape)
    return np.concatenate([noised, np.array([1.0])])
