"""The privacy benchmark's summary: the winning epsilon and what has not run."""

import argparse

from bench.privacy import (
    CLIP_ONLY_NOISE,
    SCHEDULES,
    missing_runs,
    privacy_settings,
    smallest_winning_epsilon,
)


def _variant(epsilon, means):
    return {"epsilon": epsilon, "mean": means}


def test_smallest_winning_epsilon_needs_every_domain():
    variants = {
        "local_only": _variant(None, {"a": 0.10, "b": 0.20}),
        "federated": _variant(None, {"a": 0.12, "b": 0.25}),
        "federated_dp_eps1": _variant(1.0, {"a": 0.11, "b": 0.19}),
        "federated_dp_eps3": _variant(3.0, {"a": 0.11, "b": 0.21}),
        "federated_dp_eps8": _variant(8.0, {"a": 0.12, "b": 0.22}),
    }

    assert smallest_winning_epsilon(variants) == 3.0


def test_smallest_winning_epsilon_none_when_dp_loses():
    variants = {
        "local_only": _variant(None, {"a": 0.10}),
        "federated_dp_eps8": _variant(8.0, {"a": 0.09}),
    }

    assert smallest_winning_epsilon(variants) is None


def test_smallest_winning_epsilon_skips_clip_only():
    variants = {
        "local_only": _variant(None, {"a": 0.10}),
        "federated_clip_only": _variant(None, {"a": 0.12}),
        "federated_dp_eps8": _variant(8.0, {"a": 0.09}),
    }

    assert smallest_winning_epsilon(variants) is None


def test_clip_only_settings_have_no_budget():
    train = SCHEDULES["ml-1m"]
    args = argparse.Namespace(delta=1e-5, max_grad_norm=1.0)
    domain = argparse.Namespace(name="a", split=argparse.Namespace(train=[[1, 2]] * 10))

    (clip_only,) = privacy_settings([domain], train, args, None).values()
    (budgeted,) = privacy_settings([domain], train, args, 8.0).values()

    assert clip_only.dp.noise_multiplier == CLIP_ONLY_NOISE
    assert clip_only.dp.target_epsilon == 0.0
    assert budgeted.dp.noise_multiplier == 0.0
    assert budgeted.dp.target_epsilon == 8.0


def _args(**values):
    defaults = {"quick": False, "dataset": "ml-1m", "seeds": [0, 1, 2]}
    return argparse.Namespace(**{**defaults, **values})


def test_missing_runs_names_each_shortfall():
    train = SCHEDULES["ml-100k"]

    text = missing_runs(_args(dataset="ml-100k", seeds=[0]), train)

    assert "ml-100k in place of ml-1m" in text
    assert "1 seed(s) in place of 3" in text
    assert "has not run yet" in text


def test_missing_runs_full_study_is_complete():
    assert missing_runs(_args(), SCHEDULES["ml-1m"]) == "This run is the full study."
