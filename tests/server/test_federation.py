"""Run state of the coordinator: stage transitions, tasks, uploads and reports."""

import itertools
import threading

import numpy as np
import pytest

from common.config import CoordinatorConfig, TimeoutConfig, TLSConfig
from common.pb import federation_pb2 as pb
from server.aggregation import PlainSumAggregator
from server.federation import (
    TRANSITIONS,
    DuplicateError,
    Federation,
    InvalidRequestError,
    PermissionDeniedError,
    QuorumError,
    Stage,
    Task,
    WrongStageError,
)

STATS = pb.DomainStats(n_users=10, n_items=20, n_interactions=100)


def _federation(min_domains: int = 0, join_s: float = 5.0) -> Federation:
    config = CoordinatorConfig(
        run_id="run",
        domains=("a", "b", "c"),
        min_domains=min_domains,
        tls=TLSConfig(insecure=True),
        timeouts=TimeoutConfig(join_s=join_s, round_s=5.0),
    )
    return Federation(config)


def _train_task(federation: Federation, length: int = 3) -> Task:
    return Task(
        kind=pb.TASK_KIND_TRAIN,
        task_id="train-1",
        participants=federation.active_domains(),
        vector_length=length,
        download=None,
        aggregator=PlainSumAggregator(length),
        round=1,
    )


def _vector(*values: float) -> bytes:
    return np.array(values, dtype="<f8").tobytes()


def _walk_to(federation: Federation, stage: Stage) -> None:
    path = {
        Stage.WAITING_FOR_DOMAINS: [],
        Stage.CODEBOOK: [Stage.CODEBOOK],
        Stage.TRAINING: [Stage.CODEBOOK, Stage.TRAINING],
        Stage.FINISHING: [Stage.CODEBOOK, Stage.TRAINING, Stage.FINISHING],
        Stage.DONE: [Stage.CODEBOOK, Stage.TRAINING, Stage.FINISHING, Stage.DONE],
        Stage.ABORTED: [Stage.ABORTED],
    }[stage]
    for step in path:
        federation.move_to(step)


@pytest.mark.parametrize(("source", "target"), list(itertools.product(Stage, Stage)))
def test_stage_transition_table(source, target):
    federation = _federation()
    _walk_to(federation, source)

    if target in TRANSITIONS[source]:
        federation.move_to(target)
        assert federation.stage is target
    else:
        with pytest.raises(RuntimeError, match="cannot move"):
            federation.move_to(target)
        assert federation.stage is source


def test_join_rejects_unlisted_domain():
    federation = _federation()

    with pytest.raises(PermissionDeniedError, match="'z' is not in this run"):
        federation.join("z", STATS)


def test_next_task_requires_join():
    federation = _federation()

    with pytest.raises(WrongStageError, match="has not joined"):
        federation.next_task("a", wait_s=0)


def test_next_task_waits_without_task():
    federation = _federation()
    federation.join("a", STATS)

    assert federation.next_task("a", wait_s=0).kind == pb.TASK_KIND_WAIT


def test_task_sums_uploads_of_all_participants():
    federation = _federation()
    for domain in "abc":
        federation.join(domain, STATS)
    task = _train_task(federation)
    result = {}
    loop = threading.Thread(
        target=lambda: result.update(done=federation.run_task(task, 5))
    )

    loop.start()
    for index, domain in enumerate("abc"):
        assert federation.next_task(domain, wait_s=2).task_id == "train-1"
        federation.upload(domain, "train-1", "float64-le", _vector(index, 1, 2))
    loop.join(5)

    assert result["done"] == {"a", "b", "c"}
    np.testing.assert_array_equal(task.aggregator.total(), [3, 3, 6])


def test_upload_twice_raises_duplicate():
    federation = _federation()
    federation.join("a", STATS)
    task = _train_task(federation)
    federation._task = task
    federation.upload("a", "train-1", "float64-le", _vector(1, 2, 3))

    with pytest.raises(DuplicateError, match="already uploaded"):
        federation.upload("a", "train-1", "float64-le", _vector(1, 2, 3))


def test_upload_for_other_task_raises_wrong_stage():
    federation = _federation()
    federation.join("a", STATS)
    federation._task = _train_task(federation)

    with pytest.raises(WrongStageError, match="'train-2' is not the current task"):
        federation.upload("a", "train-2", "float64-le", _vector(1, 2, 3))


@pytest.mark.parametrize(
    ("encoding", "payload", "message"),
    [
        ("float32", _vector(1, 2, 3), "encoding 'float32'"),
        ("float64-le", _vector(1, 2), "expects 3 float64 values"),
        ("float64-le", _vector(1, float("nan"), 3), "NaN"),
    ],
)
def test_upload_rejects_invalid_payload(encoding, payload, message):
    federation = _federation()
    federation.join("a", STATS)
    federation._task = _train_task(federation)

    with pytest.raises(InvalidRequestError, match=message):
        federation.upload("a", "train-1", encoding, payload)


def test_run_task_drops_late_domain_above_quorum():
    federation = _federation(min_domains=2)
    for domain in "abc":
        federation.join(domain, STATS)
    task = _train_task(federation)
    uploader = threading.Thread(
        target=lambda: [
            federation.next_task(d, wait_s=2)
            and federation.upload(d, "train-1", "float64-le", _vector(1, 1, 1))
            for d in "ab"
        ]
    )

    uploader.start()
    done = federation.run_task(task, deadline_s=3.0)
    uploader.join(5)

    assert done == {"a", "b"}


def test_run_task_raises_below_quorum():
    federation = _federation(min_domains=2)
    for domain in "abc":
        federation.join(domain, STATS)

    with pytest.raises(QuorumError, match="0 of 3 domains finished"):
        federation.run_task(_train_task(federation), deadline_s=0.2)


def test_wait_for_domains_raises_below_quorum():
    federation = _federation(min_domains=2, join_s=0.2)
    federation.join("a", STATS)

    with pytest.raises(QuorumError, match="1 of 3 domains joined"):
        federation.wait_for_domains()


def test_abort_reaches_clients():
    federation = _federation()
    federation.join("a", STATS)
    federation.abort("quorum lost")

    response = federation.next_task("a", wait_s=0)

    assert response.kind == pb.TASK_KIND_ABORT
    assert response.message == "quorum lost"


def test_report_rejects_unknown_model_and_round():
    federation = _federation()
    federation.join("a", STATS)

    with pytest.raises(InvalidRequestError, match="model must be"):
        federation.report("a", pb.ReportMetricsRequest(model="pooled"))
    with pytest.raises(InvalidRequestError, match="round 99 is outside"):
        federation.report(
            "a",
            pb.ReportMetricsRequest(
                model="federated", rounds=[pb.RoundMetrics(round=99)]
            ),
        )


def test_finish_task_not_repeated_after_final_reports():
    federation = _federation()
    federation.join("a", STATS)
    federation._task = Task(
        kind=pb.TASK_KIND_FINISH,
        task_id="finish",
        participants=frozenset({"a"}),
        vector_length=0,
        download=None,
        aggregator=None,
    )
    assert federation.next_task("a", wait_s=0).kind == pb.TASK_KIND_FINISH

    for model in ("federated", "local_only"):
        federation.report("a", pb.ReportMetricsRequest(model=model, final=True))

    assert federation.next_task("a", wait_s=0).kind == pb.TASK_KIND_WAIT


def test_dropped_domain_skips_tasks_until_it_asks_again():
    federation = _federation(min_domains=2)
    for domain in "abc":
        federation.join(domain, STATS)
    uploader = threading.Thread(
        target=lambda: [
            federation.next_task(d, wait_s=2)
            and federation.upload(d, "train-1", "float64-le", _vector(1, 1, 1))
            for d in "ab"
        ]
    )
    uploader.start()
    federation.run_task(_train_task(federation), deadline_s=3.0)
    uploader.join(5)

    assert federation.active_domains() == {"a", "b"}

    federation.next_task("c", wait_s=0)

    assert federation.active_domains() == {"a", "b", "c"}


def test_report_rejects_non_finite_metric_and_stores_nothing():
    federation = _federation()
    federation.join("a", STATS)
    request = pb.ReportMetricsRequest(
        model="federated",
        rounds=[
            pb.RoundMetrics(round=0, valid={"ndcg@10": 0.1}),
            pb.RoundMetrics(round=1, valid={"ndcg@10": float("nan")}),
        ],
    )

    with pytest.raises(InvalidRequestError, match="valid ndcg@10 is nan"):
        federation.report("a", request)

    assert federation.snapshot()["a"].reports.get("federated", {}) == {}


def test_rejoin_keeps_final_reports():
    federation = _federation()
    federation.join("a", STATS)
    federation.report("a", pb.ReportMetricsRequest(model="federated", final=True))

    federation.join("a", STATS)

    assert federation.snapshot()["a"].final == {"federated"}


def test_join_while_finishing_rejects_newcomer():
    federation = _federation()
    federation.join("a", STATS)
    _walk_to(federation, Stage.FINISHING)
    federation._task = Task(
        kind=pb.TASK_KIND_FINISH,
        task_id="finish",
        participants=frozenset({"a"}),
        vector_length=0,
        download=None,
        aggregator=None,
    )

    federation.join("a", STATS)
    with pytest.raises(WrongStageError, match="finishing and takes no new domains"):
        federation.join("b", STATS)
