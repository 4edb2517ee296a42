"""Privacy accounting: epsilon against Opacus, noise multipliers and bad settings."""

import math

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from common.accounting import (
    PrivacySettingError,
    aggregate_mechanism,
    aggregate_value_bound,
    check_user_delta,
    epsilon,
    noise_share_std,
    user_mechanism,
    user_sampling,
)
from common.config import (
    ConfigError,
    CoordinatorConfig,
    PrivacyConfig,
    SecAggConfig,
    TLSConfig,
    TrainConfig,
)


@pytest.mark.parametrize(
    ("name", "accountant_class"), [("rdp", RDPAccountant), ("prv", PRVAccountant)]
)
def test_epsilon_matches_opacus_stepwise(name, accountant_class):
    reference = accountant_class()
    for _ in range(300):
        reference.step(noise_multiplier=1.1, sample_rate=0.02)

    expected = reference.get_epsilon(delta=1e-5)

    assert epsilon(name, 1.1, 0.02, 300, 1e-5) == pytest.approx(expected, rel=1e-9)


def test_epsilon_of_no_steps_is_zero():
    assert epsilon("rdp", 1.0, 0.1, 0, 1e-5) == 0.0


def test_user_sampling_rate_and_steps():
    assert user_sampling(1000, 64, 3) == (0.064, 3 * 16)
    assert user_sampling(10, 64, 2) == (1.0, 2)


def test_user_mechanism_epsilon_grows_with_rounds():
    dp = PrivacyConfig(enabled=True, noise_multiplier=1.0, delta=1e-4)
    train = TrainConfig(rounds=5, batch_size=32, local_epochs=2)

    mechanism = user_mechanism(dp, train, n_users=640)

    reference = RDPAccountant()
    for _ in range(3 * 2 * 20):
        reference.step(noise_multiplier=1.0, sample_rate=0.05)
    assert mechanism.steps_per_round == 40
    assert mechanism.epsilon(3) == pytest.approx(reference.get_epsilon(1e-4))
    assert mechanism.epsilon(1) < mechanism.epsilon(2) < mechanism.epsilon(3)
    assert math.isinf(mechanism.budget)


def test_target_epsilon_derives_noise_that_spends_it():
    dp = PrivacyConfig(enabled=True, target_epsilon=3.0, delta=1e-4)
    train = TrainConfig(rounds=4, batch_size=32, local_epochs=1)

    mechanism = user_mechanism(dp, train, n_users=640)

    assert mechanism.noise_multiplier > 0
    assert mechanism.epsilon(4) <= 3.0
    assert mechanism.epsilon(4) > 3.0 - 0.05
    assert mechanism.budget == 3.0


def test_noise_multiplier_that_cannot_reach_target_is_rejected():
    dp = PrivacyConfig(
        enabled=True, noise_multiplier=0.3, target_epsilon=0.5, delta=1e-4
    )
    train = TrainConfig(rounds=4, batch_size=32)

    with pytest.raises(PrivacySettingError, match="dp.noise_multiplier = 0.3 cannot"):
        user_mechanism(dp, train, n_users=640)


def test_unreachable_target_is_rejected():
    dp = PrivacyConfig(
        enabled=True,
        aggregate_target_epsilon=1e-7,
        aggregate_clip=1.0,
        target_epsilon=1.0,
    )

    with pytest.raises(PrivacySettingError, match="dp.aggregate_target_epsilon"):
        aggregate_mechanism(dp, rounds=50)


def test_delta_not_below_one_over_users_is_rejected():
    dp = PrivacyConfig(enabled=True, noise_multiplier=1.0, delta=0.01)

    check_user_delta(dp, 99, "books")
    with pytest.raises(PrivacySettingError, match="lower dp.delta below 0.01"):
        check_user_delta(dp, 100, "books")


def test_aggregate_mechanism_is_one_gaussian_per_round():
    dp = PrivacyConfig(
        enabled=True,
        target_epsilon=1.0,
        aggregate_noise_multiplier=2.0,
        aggregate_clip=0.5,
        aggregate_delta=1e-3,
    )

    mechanism = aggregate_mechanism(dp, rounds=10)

    reference = RDPAccountant()
    for _ in range(10):
        reference.step(noise_multiplier=2.0, sample_rate=1.0)
    assert mechanism.epsilon(10) == pytest.approx(reference.get_epsilon(1e-3))


def test_noise_shares_sum_to_full_noise():
    dp = PrivacyConfig(
        enabled=True,
        target_epsilon=1.0,
        aggregate_noise_multiplier=2.0,
        aggregate_clip=0.5,
        honest_domains=4,
    )

    share = noise_share_std(dp, 2.0)

    assert 4 * share**2 == pytest.approx((2.0 * 0.5) ** 2)
    assert aggregate_value_bound(dp, 2.0) == pytest.approx(0.5 + 8 * share)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_grad_norm": 0.0}, "dp.max_grad_norm"),
        ({"noise_multiplier": 0.0, "target_epsilon": 0.0}, "both 0"),
        ({"delta": 1.0}, r"dp.delta must be in \(0, 1\)"),
        ({"accountant": "gdp"}, "dp.accountant"),
        ({"aggregate_noise_multiplier": 1.0}, "dp.aggregate_clip is 0"),
        ({"noise_multiplier": -1.0}, "dp.noise_multiplier"),
    ],
)
def test_bad_privacy_settings_are_rejected(settings, message):
    values = {"enabled": True, "noise_multiplier": 1.0, **settings}

    with pytest.raises(ConfigError, match=message):
        PrivacyConfig(**values)


def test_disabled_privacy_skips_checks():
    assert not PrivacyConfig(max_grad_norm=0.0).enabled


def _coordinator(dp: PrivacyConfig, **extra) -> CoordinatorConfig:
    return CoordinatorConfig(
        run_id="r",
        domains=("a", "b", "c"),
        tls=TLSConfig(insecure=True),
        dp=dp,
        **extra,
    )


AGGREGATE = PrivacyConfig(
    enabled=True,
    noise_multiplier=1.0,
    aggregate_noise_multiplier=1.0,
    aggregate_clip=1.0,
)


def test_aggregate_delta_must_be_below_one_over_domains():
    dp = PrivacyConfig(**{**AGGREGATE.__dict__, "aggregate_delta": 0.5})

    with pytest.raises(ConfigError, match="dp.aggregate_delta 0.5 must be below"):
        _coordinator(dp)


def test_aggregate_noise_needs_secure_aggregation():
    with pytest.raises(ConfigError, match="needs secagg.enabled = true"):
        _coordinator(AGGREGATE, secagg=SecAggConfig(enabled=False))


def test_aggregate_noise_rejects_secagg_clip():
    with pytest.raises(ConfigError, match="secagg.clip and secagg.group_clip"):
        _coordinator(AGGREGATE, secagg=SecAggConfig(clip=0.1))


def test_honest_domains_defaults_below_quorum():
    assert _coordinator(AGGREGATE).dp.honest_domains == 2


def test_honest_domains_above_quorum_is_rejected():
    dp = PrivacyConfig(**{**AGGREGATE.__dict__, "honest_domains": 3})

    with pytest.raises(ConfigError, match="dp.honest_domains 3 exceeds min_domains"):
        _coordinator(dp, min_domains=2)
