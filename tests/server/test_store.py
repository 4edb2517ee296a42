"""The run store: creation, checks at open, commits, and what a restart reads."""

import dataclasses
import sqlite3

import pytest

from common.config import CoordinatorConfig, TLSConfig, TrainConfig
from common.pb import federation_pb2 as pb
from server import store as runstore
from server.store import RunStore, StoreError


def _config(tmp_path, **changes) -> CoordinatorConfig:
    config = CoordinatorConfig(
        run_id="run",
        domains=("a", "b"),
        state_dir=tmp_path / "state",
        tls=TLSConfig(insecure=True),
    )
    return dataclasses.replace(config, **changes)


def _checkpoint(store: RunStore, name: str, data: bytes = b"weights"):
    path = store.state_dir / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _commit_round(store: RunStore, number: int, task_id: str | None = None):
    task_id = task_id or f"train-{number}"
    store.begin_task(task_id, f"train-{number}", "round", number, 1, 0, frozenset("ab"))
    path = _checkpoint(store, f"round-{number:04d}.safetensors")
    return store.commit(task_id, "round", number, path, {"a", "b"})


def test_store_created_at_default_path(tmp_path):
    config = _config(tmp_path)

    store = RunStore.open(config)

    assert (tmp_path / "state" / "run.sqlite").is_file()
    assert store.status() == (runstore.RUNNING, "")
    store.close()


def test_store_path_from_config(tmp_path):
    config = _config(tmp_path, store=tmp_path / "elsewhere" / "run.db")

    RunStore.open(config).close()

    assert (tmp_path / "elsewhere" / "run.db").is_file()


def test_store_rejects_other_run_id(tmp_path):
    RunStore.open(_config(tmp_path)).close()

    with pytest.raises(StoreError, match="belongs to run 'run'.*run_id = 'other'"):
        RunStore.open(_config(tmp_path, run_id="other"))


def test_store_rejects_changed_settings(tmp_path):
    RunStore.open(_config(tmp_path)).close()
    changed = _config(tmp_path, train=TrainConfig(rounds=7))

    with pytest.raises(StoreError, match=r"train\.rounds \(20 -> 7\) changed"):
        RunStore.open(changed)


@pytest.mark.parametrize(
    "content",
    [b"not a database at all" * 100, b"", b"SQLite format 3\x00" + b"\x00" * 80],
    ids=["garbage", "empty", "truncated"],
)
def test_store_rejects_corrupt_file(tmp_path, content):
    config = _config(tmp_path)
    path = tmp_path / "state" / "run.sqlite"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)

    with pytest.raises(StoreError, match="is corrupt or not a fedcdr store"):
        RunStore.open(config)
    assert path.read_bytes() == content


def test_store_rejects_damaged_page(tmp_path):
    config = _config(tmp_path)
    store = RunStore.open(config)
    for number in range(1, 40):
        store.record_metrics("a", "federated", [pb.RoundMetrics(round=number)], False)
    store.close()
    path = tmp_path / "state" / "run.sqlite"
    # Fold the WAL into the main file, then overwrite a page in its middle.
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    data = bytearray(path.read_bytes())
    data[4096 : 4096 + 512] = b"\xff" * 512

    path.write_bytes(bytes(data))

    with pytest.raises(StoreError, match="corrupt"):
        RunStore.open(config)


def test_missing_store_with_checkpoints_is_error(tmp_path):
    config = _config(tmp_path)
    store = RunStore.open(config)
    _commit_round(store, 1)
    store.close()
    (tmp_path / "state" / "run.sqlite").unlink()
    for leftover in (tmp_path / "state").glob("run.sqlite-*"):
        leftover.unlink()

    with pytest.raises(StoreError, match="run store .* is missing, but .*checkpoints"):
        RunStore.open(config)
    assert not (tmp_path / "state" / "run.sqlite").exists()


def test_status_requires_existing_store(tmp_path):
    with pytest.raises(StoreError, match="not found"):
        RunStore.open(_config(tmp_path), create=False)


def test_commit_twice_is_rejected(tmp_path):
    store = RunStore.open(_config(tmp_path))
    _commit_round(store, 1)

    with pytest.raises(RuntimeError, match="train-1 is already committed"):
        _commit_round(store, 1, task_id="train-1.2")

    assert [c.number for c in store.commits("round")] == [1]


def test_verify_detects_missing_checkpoint(tmp_path):
    store = RunStore.open(_config(tmp_path))
    commit = _commit_round(store, 1)
    store.checkpoint_path(commit).unlink()

    with pytest.raises(
        StoreError, match="round-0001.safetensors of committed train-1 is missing"
    ):
        store.verify_checkpoints()


def test_verify_detects_changed_checkpoint(tmp_path):
    store = RunStore.open(_config(tmp_path))
    commit = _commit_round(store, 1)
    store.checkpoint_path(commit).write_bytes(b"weightz")

    with pytest.raises(StoreError, match="does not match the SHA-256"):
        store.verify_checkpoints()


def test_restart_marks_inflight_task_interrupted(tmp_path):
    config = _config(tmp_path)
    store = RunStore.open(config)
    assert store.begin_start() == 1
    _commit_round(store, 1)
    store.begin_task("train-2", "train-2", "round", 2, 1, 3, frozenset("ab"))
    store.close()

    reopened = RunStore.open(config)
    start = reopened.begin_start()

    outcomes = {t.task_id: t.outcome for t in reopened.tasks()}
    assert start == 2
    assert outcomes == {"train-1": runstore.COMMITTED, "train-2": runstore.INTERRUPTED}
    assert reopened.last_commit("round").number == 1


def test_aggregation_numbers_never_repeat_across_restarts(tmp_path):
    config = _config(tmp_path)
    store = RunStore.open(config)
    first = [store.next_aggregation() for _ in range(3)]
    store.close()

    reopened = RunStore.open(config)

    assert first == [1, 2, 3]
    assert reopened.next_aggregation() == 4


def test_domains_and_metrics_survive_reopen(tmp_path):
    config = _config(tmp_path)
    store = RunStore.open(config)
    store.record_join("a", pb.DomainStats(n_users=3, n_items=5, n_interactions=9))
    metrics = pb.RoundMetrics(round=2, valid={"ndcg@10": 0.25}, valid_loss=1.5)
    store.record_metrics("a", "federated", [metrics], final=True)
    store.close()

    reopened = RunStore.open(config)

    assert reopened.domains()["a"].n_items == 5
    assert reopened.metrics()["a"]["federated"][2] == metrics
    assert reopened.finals() == {"a": {"federated"}}
