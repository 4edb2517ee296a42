"""The round loop against in-process clients that upload known vectors."""

import threading
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from common import pq
from client.aggregation import SecureUpload
from common.config import (
    CoordinatorConfig,
    ModelConfig,
    SecAggConfig,
    TimeoutConfig,
    TLSConfig,
    TrainConfig,
)
from common.pb import federation_pb2 as pb
from common.tensors import unpack_arrays
from server.errors import StopRequestedError, WrongStageError
from server.federation import Federation, QuorumError
from server.rounds import RoundLoop, initial_global_weights
from server.store import RunStore
from tests.support.inprocess import InProcessCoordinator

WEIGHTS = {"a": 1.0, "b": 3.0}
PLAIN = SecAggConfig(enabled=False)


def _config(tmp_path, rounds=2, secagg=PLAIN, weights=WEIGHTS) -> CoordinatorConfig:
    return CoordinatorConfig(
        run_id="run",
        domains=tuple(weights),
        state_dir=tmp_path,
        tls=TLSConfig(insecure=True),
        timeouts=TimeoutConfig(join_s=10, round_s=10, report_s=10),
        model=ModelConfig(
            hidden_size=16, n_layers=1, inner_size=32, n_subspaces=4, n_centroids=4
        ),
        train=TrainConfig(rounds=rounds, kmeans_iterations=2),
        secagg=secagg,
    )


def _client(
    federation: Federation,
    domain: str,
    deltas: list,
    seen: list,
    weights: dict = WEIGHTS,
) -> None:
    """Handle every task like a client, uploading a constant delta."""
    rng = np.random.default_rng(len(domain))
    embeddings = rng.standard_normal((20, 384))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    federation.join(domain, pb.DomainStats(n_users=3, n_items=20, n_interactions=60))
    transport = InProcessCoordinator(federation, domain)
    secagg = pb.SecAggConfig(
        enabled=True,
        mode=federation.config.secagg.mode,
        levels=federation.config.secagg.levels,
    )
    while True:
        task = federation.next_task(domain, wait_s=1)
        if task.kind in (pb.TASK_KIND_DONE, pb.TASK_KIND_ABORT):
            return
        upload = None
        if task.HasField("secagg"):
            upload = SecureUpload(transport, task, secagg, None, seed=1)
            upload.start()
        if task.kind == pb.TASK_KIND_CODEBOOK_MOMENTS:
            vector = pq.pack_moments(
                embeddings.sum(0), (embeddings**2).sum(0), len(embeddings)
            )
        elif task.kind == pb.TASK_KIND_CODEBOOK_STEP:
            centroids = unpack_arrays(*federation.download(domain, task.task_id))
            sums = np.zeros(centroids["centroids"].shape)
            counts = np.full(sums.shape[:2], 5.0)
            vector = pq.pack_cluster_stats(sums, counts)
        elif task.kind == pb.TASK_KIND_TRAIN:
            seen.append((domain, task.round))
            weight = weights[domain]
            delta = deltas[task.round - 1][domain]
            vector = np.append(np.full(task.vector_length - 1, delta * weight), weight)
        elif task.kind == pb.TASK_KIND_FINISH:
            _report_final(federation, domain)
            continue
        else:
            continue
        if upload is not None:
            upload.submit(vector)
        else:
            federation.upload(domain, task.task_id, "float64-le", vector.tobytes())


def _report_final(federation, domain):
    for model in ("federated", "local_only"):
        federation.report(
            domain,
            pb.ReportMetricsRequest(
                model=model,
                rounds=[pb.RoundMetrics(round=0, valid={"ndcg@10": 0.1})],
                final=True,
            ),
        )


def _run_with_clients(config, deltas, weights) -> list:
    """Run the round loop against one client thread per domain; return what
    (domain, round) pairs trained."""
    federation = Federation(config)
    seen: list = []
    clients = [
        threading.Thread(target=_client, args=(federation, d, deltas, seen, weights))
        for d in weights
    ]
    for thread in clients:
        thread.start()

    RoundLoop(config, federation).run()
    for thread in clients:
        thread.join(10)
    return seen


def test_round_loop_applies_weighted_mean_delta(tmp_path):
    config = _config(tmp_path)
    deltas = [{"a": 1.0, "b": -1.0}, {"a": 4.0, "b": 0.0}]

    seen = _run_with_clients(config, deltas, WEIGHTS)

    initial = initial_global_weights(config)
    final = load_file(tmp_path / "checkpoints" / "round-0002.safetensors")
    # Round 1: (1 * 1 + 3 * -1) / 4 = -0.5; round 2: (1 * 4 + 3 * 0) / 4 = 1.0.
    for name, value in initial.items():
        np.testing.assert_allclose(final[f"model/{name}"], value + 0.5, atol=1e-5)
    assert sorted(seen) == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert (tmp_path / "metrics.json").exists()


def test_round_loop_aborts_when_quorum_is_missed(tmp_path):
    config = _config(tmp_path)
    config = CoordinatorConfig(
        **{**config.__dict__, "timeouts": TimeoutConfig(join_s=0.2)}
    )
    federation = Federation(config)
    federation.join("a", pb.DomainStats(n_users=3, n_items=20, n_interactions=60))

    with pytest.raises(QuorumError, match="1 of 2 domains joined"):
        RoundLoop(config, federation).run()

    assert federation.next_task("a", wait_s=0).kind == pb.TASK_KIND_ABORT


def test_secure_round_loop_matches_plain_mean(tmp_path):
    weights = {"a": 1.0, "b": 3.0, "c": 2.0}
    secagg = SecAggConfig(mode="honest-but-curious", clip=8.0)
    config = _config(tmp_path, secagg=secagg, weights=weights)
    deltas = [{"a": 1.0, "b": -1.0, "c": 0.5}, {"a": 4.0, "b": 0.0, "c": -2.0}]

    seen = _run_with_clients(config, deltas, weights)

    initial = initial_global_weights(config)
    final = load_file(tmp_path / "checkpoints" / "round-0002.safetensors")
    # Round 1: (1 - 3 + 1) / 6 = -1/6; round 2: (4 + 0 - 4) / 6 = 0.
    step = 2 * 8.0 / (secagg.levels - 1)
    for name, value in initial.items():
        np.testing.assert_allclose(
            final[f"model/{name}"], value - 1 / 6, atol=2 * step + 1e-6
        )
    assert len(seen) == 6


def _plain_client(federation, domain, seen, hold=None):
    """Upload the constant delta ``DELTAS[round][domain]`` for each round in
    the clear; before its round-2 upload, wait for the ``hold`` event."""
    embeddings = np.random.default_rng(len(domain)).standard_normal((20, 384))
    federation.join(domain, pb.DomainStats(n_users=3, n_items=20, n_interactions=60))
    while True:
        task = federation.next_task(domain, wait_s=0.2)
        if task.kind in (pb.TASK_KIND_DONE, pb.TASK_KIND_ABORT):
            return
        if task.kind == pb.TASK_KIND_CODEBOOK_MOMENTS:
            vector = pq.pack_moments(
                embeddings.sum(0), (embeddings**2).sum(0), len(embeddings)
            )
        elif task.kind == pb.TASK_KIND_CODEBOOK_STEP:
            shape = unpack_arrays(*federation.download(domain, task.task_id))[
                "centroids"
            ].shape
            vector = pq.pack_cluster_stats(np.zeros(shape), np.full(shape[:2], 5.0))
        elif task.kind == pb.TASK_KIND_TRAIN:
            seen.append((domain, task.task_id))
            if hold is not None and task.round == 2:
                hold.wait(10)
            weight = WEIGHTS[domain]
            delta = RESUME_DELTAS[task.round - 1][domain]
            vector = np.append(np.full(task.vector_length - 1, delta * weight), weight)
        elif task.kind == pb.TASK_KIND_FINISH:
            _report_final(federation, domain)
            continue
        else:
            time.sleep(0.05)
            continue
        try:
            federation.upload(domain, task.task_id, "float64-le", vector.tobytes())
        except WrongStageError:
            continue


RESUME_DELTAS = [{"a": 1.0, "b": -1.0}, {"a": 4.0, "b": 0.0}, {"a": 0.0, "b": 2.0}]


def _start_clients(federation, seen, hold=None):
    threads = [
        threading.Thread(
            target=_plain_client,
            args=(federation, d, seen, hold if d == "b" else None),
            daemon=True,
        )
        for d in WEIGHTS
    ]
    for thread in threads:
        thread.start()
    return threads


def test_round_loop_resumes_after_stop(tmp_path):
    config = _config(tmp_path, rounds=3)

    # First start: stop while domain b holds its round-2 upload.
    first_store = RunStore.open(config)
    first = Federation(config, store=first_store)
    first_seen: list = []
    hold = threading.Event()
    threads = _start_clients(first, first_seen, hold)
    watcher = threading.Thread(
        target=lambda: (
            _wait_until(lambda: ("b", "train-2") in first_seen),
            first.request_stop(),
        )
    )
    watcher.start()
    with pytest.raises(StopRequestedError, match="task train-2 abandoned"):
        RoundLoop(config, first).run()
    hold.set()
    first.abort("the test ends the first start")
    for thread in [watcher, *threads]:
        thread.join(10)
    outcomes = {t.task_id: t.outcome for t in first_store.tasks()}
    first_store.close()

    # Second start: the same config resumes at round 2 under a new task id.
    second_store = RunStore.open(config)
    second = Federation(config, store=second_store)
    second_seen: list = []
    threads = _start_clients(second, second_seen)
    RoundLoop(config, second).run()
    for thread in threads:
        thread.join(10)

    assert outcomes["train-1"] == "committed"
    assert outcomes["train-2"] == "abandoned"
    assert sorted({t for _, t in second_seen}) == ["train-2.2", "train-3.2"]
    assert [c.number for c in second_store.commits("round")] == [1, 2, 3]
    assert [c.number for c in second_store.commits("codebook")] == [0, 1, 2]
    assert second_store.status()[0] == "done"
    # Rounds: (1 - 3) / 4 = -0.5, then (4 + 0) / 4 = 1.0, then (0 + 6) / 4 = 1.5.
    final = load_file(tmp_path / "checkpoints" / "round-0003.safetensors")
    for name, value in initial_global_weights(config).items():
        np.testing.assert_allclose(final[f"model/{name}"], value + 2.0, atol=1e-5)


def _wait_until(condition, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
