"""The coordinator's privacy ledger, its store records and the budget stop."""

import dataclasses
import json
import logging
import sqlite3
import threading

import numpy as np
import pytest
from safetensors.numpy import load_file

from common.accounting import PrivacySettingError, aggregate_value_bound, user_mechanism
from common.config import PrivacyConfig, SecAggConfig
from common.pb import federation_pb2 as pb
from server import store as runstore
from server.federation import Federation
from server.main import EXIT_USAGE, main
from server.privacy import PrivacyLedger
from server.rounds import RoundLoop, initial_global_weights
from server.store import RunStore
from tests.server.test_rounds import WEIGHTS, _client, _config

N_USERS = 3  # what tests.server.test_rounds._client reports at join
DELTA = 1e-3


def _dp_config(tmp_path, rounds=4, **dp):
    values = {"enabled": True, "noise_multiplier": 1.0, "delta": DELTA, **dp}
    config = _config(tmp_path, rounds=rounds)
    return dataclasses.replace(config, dp=PrivacyConfig(**values))


def _epsilon(config, rounds: int) -> float:
    return user_mechanism(config.dp, config.train, N_USERS).epsilon(rounds)


def _run(config, store=None, weights=WEIGHTS, deltas=None):
    """Run the round loop against one client thread per domain of ``weights``."""
    federation = Federation(config, store=store)
    seen: list = []
    if deltas is None:
        deltas = [dict.fromkeys(weights, 0.0)] * config.train.rounds
    clients = [
        threading.Thread(target=_client, args=(federation, d, deltas, seen, weights))
        for d in weights
    ]
    for thread in clients:
        thread.start()
    try:
        RoundLoop(config, federation).run()
    finally:
        for thread in clients:
            thread.join(10)
    return federation, seen


def test_budget_stops_training_and_keeps_rounds(tmp_path):
    probe = _dp_config(tmp_path)
    budget = (_epsilon(probe, 2) + _epsilon(probe, 3)) / 2
    config = _dp_config(tmp_path, target_epsilon=budget)
    store = RunStore.open(config)

    federation, seen = _run(config, store)

    rounds = store.commits("round")
    assert [c.number for c in rounds] == [1, 2]
    assert rounds[0].epsilon == pytest.approx(_epsilon(config, 1))
    assert rounds[1].epsilon == pytest.approx(_epsilon(config, 2))
    assert rounds[1].privacy["user_epsilon"]["a"] == pytest.approx(rounds[1].epsilon)
    assert sorted(seen) == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    status, message = store.status()
    assert status == runstore.DONE
    assert "round 3 would spend epsilon" in message
    assert "raise dp.target_epsilon or dp.noise_multiplier" in message
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["a"]["privacy"]["epsilon"] == pytest.approx(_epsilon(config, 2))
    assert metrics["a"]["privacy"]["rounds"] == 2
    gauge = federation.metrics.registry.get_sample_value(
        "fedcdr_privacy_epsilon", {"domain": "b"}
    )
    assert gauge == pytest.approx(_epsilon(config, 2))


def test_budget_below_one_round_refuses_to_start(tmp_path):
    probe = _dp_config(tmp_path)
    config = _dp_config(tmp_path, target_epsilon=_epsilon(probe, 1) / 2)
    store = RunStore.open(config)

    with pytest.raises(PrivacySettingError, match="dp.noise_multiplier = 1 cannot"):
        _run(config, store)

    status, message = store.status()
    assert status == runstore.ABORTED
    assert "raise dp.noise_multiplier to at least" in message
    assert store.commits() == []


def test_delta_above_inverse_users_rejected(tmp_path):
    config = _dp_config(tmp_path, delta=0.5)
    store = RunStore.open(config)

    with pytest.raises(PrivacySettingError, match="dp.delta 0.5 is not below"):
        _run(config, store)

    assert store.status()[0] == runstore.ABORTED


def test_ledger_last_round_within_budget(tmp_path):
    probe = _dp_config(tmp_path, rounds=6)
    budget = (_epsilon(probe, 4) + _epsilon(probe, 5)) / 2
    ledger = PrivacyLedger(_dp_config(tmp_path, rounds=6, target_epsilon=budget))
    stats = pb.DomainStats(n_users=N_USERS, n_items=20, n_interactions=60)

    ledger.plan({"a": stats, "b": stats})

    assert ledger.last_round_within_budget() == 4
    assert "round 5 would spend" in ledger.stop_message(5)
    assert ledger.stop_message(4) == ""


def test_ledger_epsilon_after_round(tmp_path):
    config = _dp_config(tmp_path, delta=1e-4)
    ledger = PrivacyLedger(config)
    small = pb.DomainStats(n_users=100, n_items=20, n_interactions=600)
    large = pb.DomainStats(n_users=1000, n_items=20, n_interactions=6000)

    assert ledger.epsilon_after(2) is None
    ledger.plan({"a": large})
    alone = ledger.epsilon_after(2)
    ledger.plan({"a": large, "b": small})

    # The smaller domain samples each user more often, so it spends more.
    assert alone < ledger.epsilon_after(2)
    expected = user_mechanism(config.dp, config.train, 100).epsilon(2)
    assert ledger.epsilon_after(2) == pytest.approx(expected)
    assert ledger.epsilon_after(2) == ledger.round_record(2)["epsilon"]


def test_finished_rounds_carry_epsilon(tmp_path):
    config = _dp_config(tmp_path, rounds=2)
    federation, _ = _run(config)

    finished = federation.progress().finished
    rounds = {task.round: task.epsilon for task in finished if task.epsilon}

    assert rounds == {
        1: pytest.approx(_epsilon(config, 1)),
        2: pytest.approx(_epsilon(config, 2)),
    }


def test_ledger_without_dp_records_nothing(tmp_path):
    ledger = PrivacyLedger(_config(tmp_path))

    assert ledger.epsilon_after(1) is None
    assert ledger.round_record(1) is None
    assert ledger.domain_summary(1) == {}
    assert ledger.aggregate_noise_multiplier == 0.0


def test_aggregate_noise_widens_quantization_bound(tmp_path):
    config = _config(tmp_path, secagg=SecAggConfig(mode="honest-but-curious"))
    dp = PrivacyConfig(
        enabled=True,
        noise_multiplier=1.0,
        delta=DELTA,
        aggregate_noise_multiplier=1.5,
        aggregate_clip=0.2,
        aggregate_delta=1e-2,
    )
    config = dataclasses.replace(config, dp=dp)
    federation = Federation(config)
    loop = RoundLoop(config, federation)

    layout = loop._train_layout({"encoder.w": np.zeros(3)})

    bound = aggregate_value_bound(config.dp, 1.5)
    assert [s.bound for s in layout.segments if s.kind == "quantized"] == [bound]
    assert bound > 0.2


def test_store_from_before_privacy_columns_gets_them(tmp_path):
    config = _config(tmp_path)
    store = RunStore.open(config)
    store.close()
    # Rebuild the commits table as an older fedcdr created it.
    path = tmp_path / "run.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE commits")
        db.execute(
            "CREATE TABLE commits (base_id TEXT PRIMARY KEY, kind TEXT NOT NULL, "
            "number INTEGER NOT NULL, task_id TEXT NOT NULL, checkpoint TEXT NOT "
            "NULL, sha256 TEXT NOT NULL, survivors TEXT NOT NULL, committed_at "
            "REAL NOT NULL)"
        )
        db.execute(
            "INSERT INTO commits VALUES ('codebook-0', 'codebook', 0, 'codebook-0', "
            "'c.safetensors', 'ab', 'a,b', 1.0)"
        )

    reopened = RunStore.open(config)

    columns = {row[1] for row in reopened._query("PRAGMA table_info(commits)")}
    assert {"epsilon", "privacy"} <= columns
    (old,) = reopened.commits()
    assert old.epsilon is None
    assert old.privacy is None


def test_commit_stores_privacy_record(tmp_path):
    config = _config(tmp_path)
    store = RunStore.open(config)
    checkpoint = tmp_path / "round.safetensors"
    checkpoint.write_bytes(b"weights")
    store.begin_task("train-1", "train-1", "round", 1, 1, 0, frozenset({"a"}))
    record = {"round": 1, "epsilon": 2.5, "user_epsilon": {"a": 2.5}}

    store.commit("train-1", "round", 1, checkpoint, {"a"}, record)

    (commit,) = store.commits("round")
    assert commit.epsilon == 2.5
    assert commit.privacy == record


def test_fingerprint_without_dp_omits_key(tmp_path):
    assert "dp" not in json.loads(runstore.fingerprint(_config(tmp_path)))
    assert "dp" in json.loads(runstore.fingerprint(_dp_config(tmp_path)))


def test_unreachable_aggregate_target_exits_before_store(tmp_path, caplog):
    path = tmp_path / "coordinator.toml"
    path.write_text(
        'run_id = "r"\ndomains = ["a", "b", "c"]\nstate_dir = "state"\n'
        "[tls]\ninsecure = true\n"
        "[dp]\nenabled = true\nnoise_multiplier = 1.0\n"
        "aggregate_target_epsilon = 1e-7\naggregate_clip = 1.0\n"
    )

    with caplog.at_level(logging.ERROR):
        code = main(["run", "--config", str(path)])

    assert code == EXIT_USAGE
    assert "raise dp.aggregate_target_epsilon" in caplog.text
    assert not (tmp_path / "state" / "run.sqlite").exists()


def test_secure_round_with_domain_noise_averages_equally(tmp_path):
    weights = {"a": 1.0, "b": 1.0, "c": 1.0}
    secagg = SecAggConfig(mode="honest-but-curious")
    dp = PrivacyConfig(
        enabled=True,
        noise_multiplier=1.0,
        delta=DELTA,
        aggregate_noise_multiplier=1.0,
        aggregate_clip=1.0,
        aggregate_delta=1e-2,
    )
    config = dataclasses.replace(
        _config(tmp_path, rounds=1, secagg=secagg, weights=weights), dp=dp
    )
    # Noised values reach far beyond the automatic bound of training without
    # noise (learning rate times steps, 1e-3 here).
    deltas = [{"a": 2.0, "b": -1.0, "c": 0.5}]

    _run(config, weights=weights, deltas=deltas)

    initial = initial_global_weights(config)
    final = load_file(tmp_path / "checkpoints" / "round-0001.safetensors")
    bound = aggregate_value_bound(dp, 1.0)
    step = 2 * bound / (secagg.levels - 1)
    for name, value in initial.items():
        np.testing.assert_allclose(
            final[f"model/{name}"], value + 0.5, atol=2 * step + 1e-6
        )
