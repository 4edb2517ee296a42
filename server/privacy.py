"""The coordinator's privacy ledger: epsilon after each round and the budget stop.

The coordinator has no access to the noise, so it accounts from the settings.
Every domain runs ``steps_per_round`` DP-SGD steps in every round, and the
aggregate gets one Gaussian mechanism per round. A domain's own client keeps
an Opacus accountant of its real steps and logs it too.
"""

from __future__ import annotations

import logging
import threading
import math
from collections.abc import Mapping
from typing import Any

from common.accounting import (
    Mechanism,
    PrivacySettingError,
    aggregate_mechanism,
    check_user_delta,
    user_mechanism,
)
from common.config import CoordinatorConfig
from common.pb import federation_pb2 as pb

logger = logging.getLogger(__name__)


class PrivacyLedger:
    """Noise multipliers, epsilon by round and the last round within budget.

    Raises
    ------
    PrivacySettingError
        From the constructor, when the domain-level settings cannot reach
        their target; from :meth:`plan`, when a domain's user-level settings
        cannot.
    """

    def __init__(self, config: CoordinatorConfig) -> None:
        self.dp = config.dp
        self.train = config.train
        self.aggregate: Mechanism | None = None
        if self.dp.aggregate:
            self.aggregate = aggregate_mechanism(self.dp, self.train.rounds)
        self.users: dict[str, Mechanism] = {}
        self._logged_aggregate = False
        # epsilon_after's results, cleared when plan() adds a domain. The
        # round table's thread reads them while the round loop plans.
        self._epsilon_after: dict[int, float] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.dp.enabled

    @property
    def aggregate_noise_multiplier(self) -> float:
        """The domain-level noise multiplier every client uses, 0 when off."""
        return self.aggregate.noise_multiplier if self.aggregate is not None else 0.0

    def plan(self, stats: Mapping[str, pb.DomainStats]) -> None:
        """Fix the DP-SGD mechanism of every domain not planned yet, and log it.

        Raises
        ------
        PrivacySettingError
            When ``dp.delta`` is not below 1 / users of a domain, or the user-level
            noise cannot reach ``dp.target_epsilon`` there.
        """
        if not self.enabled:
            return
        for domain in sorted(set(stats) - set(self.users)):
            n_users = int(stats[domain].n_users)
            check_user_delta(self.dp, n_users, domain)
            mechanism = user_mechanism(self.dp, self.train, n_users)
            with self._lock:
                self.users[domain] = mechanism
                self._epsilon_after.clear()
            logger.info(
                "domain=%s DP-SGD noise_multiplier=%.4g sample_rate=%.4g "
                "steps_per_round=%d, epsilon after %d rounds=%.4g at delta=%g",
                domain,
                mechanism.noise_multiplier,
                mechanism.sample_rate,
                mechanism.steps_per_round,
                self.train.rounds,
                mechanism.epsilon(self.train.rounds),
                self.dp.delta,
            )
        if self.aggregate is not None and not self._logged_aggregate:
            self._logged_aggregate = True
            logger.info(
                "domain-level noise_multiplier=%.4g clip=%g honest_domains=%d, "
                "epsilon after %d rounds=%.4g at delta=%g",
                self.aggregate.noise_multiplier,
                self.dp.aggregate_clip,
                self.dp.honest_domains,
                self.train.rounds,
                self.aggregate.epsilon(self.train.rounds),
                self.dp.aggregate_delta,
            )

    def _mechanisms(self) -> list[Mechanism]:
        found = list(self.users.values())
        if self.aggregate is not None:
            found.append(self.aggregate)
        return found

    def last_round_within_budget(self) -> int:
        """Return the last round up to ``train.rounds`` that every budget allows.

        The plan check guarantees at least round 1, so the result is at least 1.
        """
        last = self.train.rounds
        for mechanism in self._mechanisms():
            if math.isinf(mechanism.budget):
                continue
            while last > 0 and not mechanism.within_budget(last):
                last -= 1
        return last

    def stop_message(self, round_index: int) -> str:
        """Explain why round ``round_index`` would exceed a budget, naming settings."""
        for mechanism in self._mechanisms():
            if not mechanism.within_budget(round_index):
                noise_key, budget_key = mechanism.settings
                return (
                    f"training stopped after round {round_index - 1} of "
                    f"{self.train.rounds}: round {round_index} would spend epsilon "
                    f"{mechanism.epsilon(round_index):.4g}, above {budget_key} = "
                    f"{mechanism.budget:g}; raise {budget_key} or {noise_key}, or "
                    "lower train.rounds"
                )
        return ""

    def epsilon_after(self, round_index: int) -> float | None:
        """Return the largest user-level epsilon after ``round_index`` rounds.

        None when DP is off or no domain is planned yet. The round table calls
        this twice a second, so each round's value is computed once.
        """
        with self._lock:
            if not self.enabled or not self.users:
                return None
            if round_index not in self._epsilon_after:
                self._epsilon_after[round_index] = max(
                    mechanism.epsilon(round_index) for mechanism in self.users.values()
                )
            return self._epsilon_after[round_index]

    def round_record(self, round_index: int) -> dict[str, Any] | None:
        """Return the epsilon spent after ``round_index`` rounds, None when DP is off.

        ``epsilon`` is the largest user-level epsilon of any domain, so one
        number bounds every domain's users.
        """
        if not self.enabled:
            return None
        users = {
            domain: mechanism.epsilon(round_index)
            for domain, mechanism in sorted(self.users.items())
        }
        record: dict[str, Any] = {
            "round": round_index,
            "epsilon": max(users.values(), default=0.0),
            "delta": self.dp.delta,
            "user_epsilon": users,
            "accountant": self.dp.accountant,
        }
        if self.aggregate is not None:
            record["aggregate_epsilon"] = self.aggregate.epsilon(round_index)
            record["aggregate_delta"] = self.dp.aggregate_delta
        return record

    def domain_summary(self, round_index: int) -> dict[str, dict[str, Any]]:
        """Return each domain's privacy entry of metrics.json after ``round_index``."""
        record = self.round_record(round_index)
        if record is None:
            return {}
        summary = {}
        for domain, mechanism in self.users.items():
            entry: dict[str, Any] = {
                "rounds": round_index,
                "epsilon": record["user_epsilon"][domain],
                "delta": self.dp.delta,
                "noise_multiplier": mechanism.noise_multiplier,
                "max_grad_norm": self.dp.max_grad_norm,
                "sample_rate": mechanism.sample_rate,
                "steps": round_index * mechanism.steps_per_round,
                "accountant": self.dp.accountant,
            }
            if self.aggregate is not None:
                entry["aggregate_epsilon"] = record["aggregate_epsilon"]
                entry["aggregate_delta"] = self.dp.aggregate_delta
                entry["aggregate_noise_multiplier"] = self.aggregate.noise_multiplier
            summary[domain] = entry
        return summary


__all__ = ["PrivacyLedger", "PrivacySettingError"]
