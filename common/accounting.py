"""Privacy accounting of a run: noise multipliers and epsilon after each round.

Both the coordinator and the clients call these functions, so both derive the
same noise multiplier and the same epsilon from the same settings. The
accountants are Opacus's (RDP or PRV). Each one composes ``steps`` runs of a
Poisson-subsampled Gaussian mechanism with sampling rate ``sample_rate`` and
noise multiplier sigma.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

from common.config import PrivacyConfig, TrainConfig

# Quantization bound of one noised value in standard deviations of a
# domain's noise share: a Gaussian value lies outside 8 of them with
# probability about 1.2e-15, so clipping after the noise practically never
# happens.
NOISE_BOUND_SIGMAS = 8.0


class PrivacySettingError(ValueError):
    """The [dp] settings cannot give the requested guarantee; the message
    names the setting to change."""


def user_sampling(
    n_users: int, batch_size: int, local_epochs: int
) -> tuple[float, int]:
    """Return the sampling rate and the DP-SGD steps per round of a domain.

    Every step draws each user independently with probability
    ``batch_size / n_users`` (Poisson sampling), and a round has as many steps
    as ``local_epochs`` passes of ``batch_size`` users would take.
    """
    if n_users < 1:
        raise PrivacySettingError(
            f"a domain with {n_users} users cannot train with DP-SGD; it needs "
            "at least one user"
        )
    sample_rate = min(1.0, batch_size / n_users)
    return sample_rate, local_epochs * math.ceil(n_users / batch_size)


def epsilon(
    accountant: str,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
) -> float:
    """Return the epsilon that ``steps`` subsampled Gaussian steps spend at ``delta``."""
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    tracker = create_accountant(mechanism=accountant)
    tracker.history = [(noise_multiplier, sample_rate, steps)]
    with warnings.catch_warnings():
        # The PRV accountant takes log(1 - q), which is -inf at q = 1, and
        # handles it; numpy warns all the same.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(tracker.get_epsilon(delta=delta))


@dataclass(frozen=True)
class Mechanism:
    """A Gaussian mechanism run ``steps_per_round`` times in every round.

    ``budget`` is the largest epsilon the run may spend at ``delta``, or
    infinity for none. ``settings`` are the config keys of the noise
    multiplier and of the budget, for messages.
    """

    accountant: str
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    delta: float
    budget: float
    settings: tuple[str, str]

    def epsilon(self, rounds: int) -> float:
        """Return the epsilon spent after ``rounds`` rounds."""
        return epsilon(
            self.accountant,
            self.noise_multiplier,
            self.sample_rate,
            rounds * self.steps_per_round,
            self.delta,
        )

    def within_budget(self, rounds: int) -> bool:
        """Return True when ``rounds`` rounds spend no more than the budget."""
        return self.epsilon(rounds) <= self.budget


def _resolve(
    accountant: str,
    noise_multiplier: float,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps_per_round: int,
    rounds: int,
    names: tuple[str, str],
) -> Mechanism:
    """Fix the noise multiplier and the budget from the two settings.

    ``names`` are the keys of the noise multiplier and the target epsilon.
    """
    noise_key, target_key = names
    budget = target_epsilon if target_epsilon > 0 else math.inf
    if noise_multiplier == 0:
        try:
            noise_multiplier = get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=rounds * steps_per_round,
                accountant=accountant,
            )
        except ValueError:
            raise PrivacySettingError(
                f"no noise multiplier up to 1e6 reaches {target_key} = "
                f"{target_epsilon:g} at delta {delta:g} over {rounds} rounds; raise "
                f"{target_key} or lower train.rounds"
            ) from None
    mechanism = Mechanism(
        accountant,
        noise_multiplier,
        sample_rate,
        steps_per_round,
        delta,
        budget,
        names,
    )
    if not mechanism.within_budget(1):
        needed = get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps_per_round,
            accountant=accountant,
        )
        raise PrivacySettingError(
            f"{noise_key} = {noise_multiplier:g} cannot reach {target_key} = "
            f"{target_epsilon:g}: one round already spends epsilon "
            f"{mechanism.epsilon(1):.3g}; raise {noise_key} to at least "
            f"{needed:.3g} or raise {target_key}"
        )
    return mechanism


def check_user_delta(dp: PrivacyConfig, n_users: int, domain: str) -> None:
    """Raise PrivacySettingError unless ``dp.delta`` is below 1 / ``n_users``.

    With delta of 1/n or more, a mechanism that publishes each user's data
    outright with probability delta meets the definition, and it exposes
    delta * n >= 1 users on average.
    """
    if dp.delta * n_users >= 1:
        raise PrivacySettingError(
            f"dp.delta {dp.delta:g} is not below 1 / the number of users of "
            f"domain {domain!r} = 1/{n_users}; lower dp.delta below {1 / n_users:.3g}"
        )


def user_mechanism(dp: PrivacyConfig, train: TrainConfig, n_users: int) -> Mechanism:
    """Return the user-level DP-SGD mechanism of a domain with ``n_users`` users.

    Raises
    ------
    PrivacySettingError
        When no noise multiplier reaches ``dp.target_epsilon``, or when a fixed
        ``dp.noise_multiplier`` spends more than ``dp.target_epsilon`` in one round.
    """
    sample_rate, steps = user_sampling(n_users, train.batch_size, train.local_epochs)
    return _resolve(
        dp.accountant,
        dp.noise_multiplier,
        dp.target_epsilon,
        dp.delta,
        sample_rate,
        steps,
        train.rounds,
        ("dp.noise_multiplier", "dp.target_epsilon"),
    )


def aggregate_mechanism(dp: PrivacyConfig, rounds: int) -> Mechanism:
    """Return the domain-level mechanism of the aggregate: one step per round.

    Every domain takes part in every round, so the sampling rate is 1.
    """
    return _resolve(
        dp.accountant,
        dp.aggregate_noise_multiplier,
        dp.aggregate_target_epsilon,
        dp.aggregate_delta,
        1.0,
        1,
        rounds,
        ("dp.aggregate_noise_multiplier", "dp.aggregate_target_epsilon"),
    )


def noise_share_std(dp: PrivacyConfig, noise_multiplier: float) -> float:
    """Return the standard deviation of the noise one domain adds to each value.

    ``dp.honest_domains`` shares of this variance sum to the variance
    ``(noise_multiplier * dp.aggregate_clip) ** 2`` the accountant assumes.
    """
    honest = max(1, dp.honest_domains)
    return noise_multiplier * dp.aggregate_clip / math.sqrt(honest)


def aggregate_value_bound(dp: PrivacyConfig, noise_multiplier: float) -> float:
    """Return the quantization bound of one value of a noised domain update.

    A clipped update has no value above ``dp.aggregate_clip``, and the noise
    stays within ``NOISE_BOUND_SIGMAS`` standard deviations of its share.
    """
    share = noise_share_std(dp, noise_multiplier)
    return dp.aggregate_clip + NOISE_BOUND_SIGMAS * share
