"""The round loop against in-process clients that upload known vectors."""

import threading

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
from server.federation import Federation, QuorumError
from server.rounds import RoundLoop, initial_global_weights
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
            for model in ("federated", "local_only"):
                federation.report(
                    domain,
                    pb.ReportMetricsRequest(
                        model=model,
                        rounds=[pb.RoundMetrics(round=0, valid={"ndcg@10": 0.1})],
                        final=True,
                    ),
                )
            continue
        else:
            continue
        if upload is not None:
            upload.submit(vector)
        else:
            federation.upload(domain, task.task_id, "float64-le", vector.tobytes())


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
