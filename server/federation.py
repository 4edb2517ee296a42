"""Run state shared by the RPC handlers and the round loop: stages, tasks, uploads."""

from __future__ import annotations

import collections
import copy
import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.config import CoordinatorConfig
from common.pb import federation_pb2 as pb
from server.aggregation import AggregationError, Aggregator
from common.secagg.vector import SECAGG_ENCODING
from server.errors import (
    DuplicateError,
    InvalidRequestError,
    PermissionDeniedError,
    QuorumError,
    StopRequestedError,
    WrongStageError,
)
from server.secagg import WIRE_STAGES, SecAggSession
from server.secagg import Stage as SecAggStage
from server.metrics import CoordinatorMetrics
from server.privacy import PrivacyLedger
from server.store import RunStore

logger = logging.getLogger(__name__)

# How long one GetTask call waits for a new task before it returns WAIT.
LONG_POLL_S = 5.0
# Finished tasks that progress() returns.
FINISHED_KEPT = 32


class Stage(enum.Enum):
    """Stage of a run; TRANSITIONS lists the allowed moves."""

    WAITING_FOR_DOMAINS = "waiting_for_domains"
    CODEBOOK = "codebook"
    TRAINING = "training"
    FINISHING = "finishing"
    DONE = "done"
    ABORTED = "aborted"


TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.WAITING_FOR_DOMAINS: frozenset({Stage.CODEBOOK, Stage.ABORTED}),
    Stage.CODEBOOK: frozenset({Stage.TRAINING, Stage.ABORTED}),
    Stage.TRAINING: frozenset({Stage.FINISHING, Stage.ABORTED}),
    Stage.FINISHING: frozenset({Stage.DONE, Stage.ABORTED}),
    Stage.DONE: frozenset(),
    Stage.ABORTED: frozenset(),
}


def _check_round_metrics(metrics: pb.RoundMetrics, rounds: int) -> None:
    if not 0 <= metrics.round <= rounds:
        raise InvalidRequestError(f"round {metrics.round} is outside 0..{rounds}")
    for split, values in (("valid", metrics.valid), ("test", metrics.test)):
        for key, value in values.items():
            if not math.isfinite(value):
                raise InvalidRequestError(
                    f"round {metrics.round}: {split} {key} is {value}, not a finite "
                    "number"
                )


@dataclass
class Task:
    """One unit of work every participant does once: a codebook step or a round."""

    kind: int
    task_id: str
    participants: frozenset[str]
    vector_length: int
    download: tuple[pb.TensorManifest, bytes] | None
    aggregator: Aggregator | None
    round: int = 0
    step: int = 0
    uploaded: set[str] = field(default_factory=set)
    secagg: SecAggSession | None = None

    def view(self) -> pb.GetTaskResponse:
        response = pb.GetTaskResponse(
            kind=self.kind,  # type: ignore[arg-type]
            task_id=self.task_id,
            round=self.round,
            step=self.step,
            vector_length=self.vector_length,
        )
        if self.secagg is not None:
            response.secagg.CopyFrom(self.secagg.task_message())
        return response


@dataclass(frozen=True)
class TaskProgress:
    """State of the task in flight, or of the last one, for the round table."""

    task_id: str
    kind: int
    round: int
    step: int
    # The aggregation stage in flight (``masked_input``), or how it ended.
    stage: str
    participants: frozenset[str]
    # Participants still taking part, or whose input the finished task contains.
    present: frozenset[str]
    dropped: frozenset[str]
    finished: bool
    # Payload bytes of accepted uploads and of finished downloads since the
    # task was published.
    bytes_in: int = 0
    bytes_out: int = 0
    # User-level epsilon spent once this round commits, None for other tasks,
    # without DP and before the domains' noise is planned.
    epsilon: float | None = None


@dataclass(frozen=True)
class RunProgress:
    """Snapshot of a run for the round table, taken under the federation's lock."""

    stage: str
    joined: frozenset[str]
    task: TaskProgress | None
    # Latest validation NDCG@10 each domain reported for the federated model.
    valid_ndcg: dict[str, float]
    # The last FINISHED_KEPT finished tasks, oldest first, so a reader that
    # polls less often than tasks finish still reads each one.
    finished: tuple[TaskProgress, ...] = ()


@dataclass
class DomainRecord:
    """Record of a joined domain: its size, its reports and its progress flags."""

    stats: pb.DomainStats
    reports: dict[str, dict[int, pb.RoundMetrics]] = field(default_factory=dict)
    final: set[str] = field(default_factory=set)
    saw_end: bool = False
    dropped: bool = False


class Federation:
    """State of one run, guarded by one condition variable.

    RPC handlers call :meth:`join`, :meth:`next_task`, :meth:`download`,
    :meth:`upload` and :meth:`report`; the round loop calls the rest.
    """

    def __init__(
        self,
        config: CoordinatorConfig,
        clock: Callable[[], float] = time.monotonic,
        store: RunStore | None = None,
        metrics: CoordinatorMetrics | None = None,
    ) -> None:
        self.config = config
        self.store = store if store is not None else RunStore.in_memory(config)
        self.metrics = metrics if metrics is not None else CoordinatorMetrics()
        # Raises PrivacySettingError before any client joins when the
        # domain-level settings cannot reach their target.
        self.privacy = PrivacyLedger(config)
        self._clock = clock
        self._cond = threading.Condition()
        self._stage = Stage.WAITING_FOR_DOMAINS
        self._task: Task | None = None
        # The task in flight or the last one, the byte counters when it was
        # published, and the last finished tasks, all kept for progress().
        self._shown_task: Task | None = None
        self._shown_bytes = (0, 0)
        self._finished: collections.deque[TaskProgress] = collections.deque(
            maxlen=FINISHED_KEPT
        )
        self._abort_message = ""
        self._stopping = threading.Event()
        self.domains = _restore_domains(self.store)

    def request_stop(self) -> None:
        """Ask the round loop to abandon the task in flight and return.

        Safe to call from a signal handler: it only sets an event, and every
        wait of the round loop checks it at least once a second.
        """
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`request_stop` was called."""
        return self._stopping.is_set()

    @property
    def stage(self) -> Stage:
        return self._stage

    def move_to(self, stage: Stage) -> None:
        """Change stage; raise RuntimeError for a move TRANSITIONS does not allow."""
        with self._cond:
            if stage not in TRANSITIONS[self._stage]:
                raise RuntimeError(
                    f"stage {self._stage.value} cannot move to {stage.value}"
                )
            logger.info("stage %s -> %s", self._stage.value, stage.value)
            self._stage = stage
            self._cond.notify_all()

    def abort(self, message: str) -> None:
        """Abort the run; clients learn ``message`` from their next GetTask."""
        with self._cond:
            if self._stage in (Stage.DONE, Stage.ABORTED):
                return
            logger.error("run aborted: %s", message)
            self._abort_message = message
            self._stage = Stage.ABORTED
            self._task = None
            self._cond.notify_all()

    # RPC side

    def join(self, domain: str, stats: pb.DomainStats) -> None:
        """Register ``domain``; a domain that joins again replaces its record."""
        if domain not in self.config.domains:
            raise PermissionDeniedError(
                f"domain {domain!r} is not in this run's domains "
                f"{list(self.config.domains)}; add it to the coordinator config"
            )
        with self._cond:
            if self._stage in (Stage.DONE, Stage.ABORTED):
                raise WrongStageError(
                    f"run {self.config.run_id} is {self._stage.value}"
                )
            task = self._task
            finishing = self._stage is Stage.FINISHING
            if finishing and (task is None or domain not in task.participants):
                raise WrongStageError(
                    f"run {self.config.run_id} is finishing and takes no new "
                    f"domains; domain {domain!r} can join the next run"
                )
            rejoin = domain in self.domains
            previous = self.domains.get(domain)
            # Stored before the reply, so a restarted coordinator finds the
            # domain when its next GetTask arrives.
            self.store.record_join(domain, stats)
            record = DomainRecord(stats=stats)
            if previous is not None:
                record.reports = previous.reports
                record.final = previous.final
            self.domains[domain] = record
            logger.info(
                "domain joined domain=%s users=%d items=%d rejoin=%s",
                domain,
                stats.n_users,
                stats.n_items,
                rejoin,
            )
            self._cond.notify_all()

    def next_task(self, domain: str, wait_s: float = LONG_POLL_S) -> pb.GetTaskResponse:
        """Return the caller's next task, waiting up to ``wait_s`` for one."""
        deadline = self._clock() + wait_s
        with self._cond:
            record = self._require_joined(domain)
            if record.dropped:
                record.dropped = False
                logger.info(
                    "domain=%s is back and takes part from the next task", domain
                )
            while True:
                response = self._task_for(domain)
                if response.kind != pb.TASK_KIND_WAIT:
                    return response
                remaining = deadline - self._clock()
                if remaining <= 0 or self.stopping:
                    return response
                self._cond.wait(remaining)

    def _task_for(self, domain: str) -> pb.GetTaskResponse:
        if self._stage is Stage.ABORTED:
            self.domains[domain].saw_end = True
            return pb.GetTaskResponse(
                kind=pb.TASK_KIND_ABORT, message=self._abort_message
            )
        if self._stage is Stage.DONE:
            self.domains[domain].saw_end = True
            self._cond.notify_all()
            return pb.GetTaskResponse(kind=pb.TASK_KIND_DONE)
        task = self._task
        if (
            task is None
            or domain not in task.participants
            or domain in self._completed(task)
        ):
            return pb.GetTaskResponse(kind=pb.TASK_KIND_WAIT)
        if task.secagg is not None and not task.secagg.accepts_newcomer(domain):
            # A client that restarted mid-aggregation lost its keys, so it
            # waits for the next task.
            return pb.GetTaskResponse(kind=pb.TASK_KIND_WAIT)
        return task.view()

    def download(self, domain: str, task_id: str) -> tuple[pb.TensorManifest, bytes]:
        """Return the packed starting state of the caller's current task."""
        with self._cond:
            task = self._current_task(domain, task_id)
            if task.download is None:
                raise WrongStageError(f"task {task_id} has nothing to download")
            return task.download

    def upload(self, domain: str, task_id: str, encoding: str, payload: bytes) -> None:
        """Add the caller's upload to the current task's aggregate."""
        with self._cond:
            task = self._current_task(domain, task_id)
            if task.secagg is not None:
                if encoding != SECAGG_ENCODING:
                    raise InvalidRequestError(
                        f"upload encoding {encoding!r} does not match this run's "
                        f"{SECAGG_ENCODING!r}; secure aggregation takes only "
                        "masked inputs"
                    )
                task.secagg.add_masked_input(domain, payload)
                logger.info("masked input accepted task=%s domain=%s", task_id, domain)
                self._cond.notify_all()
                return
            if task.aggregator is None:
                raise WrongStageError(f"task {task_id} takes no upload")
            if domain in task.uploaded:
                raise DuplicateError(
                    f"domain {domain!r} already uploaded for task {task_id}"
                )
            if encoding != task.aggregator.encoding:
                raise InvalidRequestError(
                    f"upload encoding {encoding!r} does not match this run's "
                    f"{task.aggregator.encoding!r}"
                )
            try:
                task.aggregator.add(domain, payload)
            except AggregationError as error:
                raise InvalidRequestError(str(error)) from None
            task.uploaded.add(domain)
            logger.info(
                "upload accepted task=%s domain=%s (%d of %d)",
                task_id,
                domain,
                len(task.uploaded),
                len(task.participants),
            )
            self._cond.notify_all()

    def report(self, domain: str, request: pb.ReportMetricsRequest) -> None:
        """Store the caller's metrics; a round reported again replaces the old."""
        if request.model not in ("federated", "local_only"):
            raise InvalidRequestError(
                f"model must be 'federated' or 'local_only', got {request.model!r}"
            )
        for metrics in request.rounds:
            _check_round_metrics(metrics, self.config.train.rounds)
        with self._cond:
            record = self._require_joined(domain)
            self.store.record_metrics(
                domain, request.model, list(request.rounds), request.final
            )
            history = record.reports.setdefault(request.model, {})
            for metrics in request.rounds:
                history[metrics.round] = metrics
            if request.final:
                record.final.add(request.model)
            self._cond.notify_all()

    def progress(self) -> RunProgress:
        """Return the run's stage, joined domains, task state and latest NDCG@10."""
        with self._cond:
            task = self._shown_task
            ndcg = {}
            for domain, record in self.domains.items():
                history = record.reports.get("federated")
                if history:
                    latest = history[max(history)]
                    if "ndcg@10" in latest.valid:
                        ndcg[domain] = latest.valid["ndcg@10"]
            return RunProgress(
                stage=self._stage.value,
                joined=frozenset(self.domains),
                task=self._task_progress(task) if task is not None else None,
                valid_ndcg=ndcg,
                finished=tuple(self._finished),
            )

    def _publish(self, task: Task) -> None:
        """Make ``task`` the current one; call with the lock held."""
        self._task = task
        self._shown_task = task
        self._shown_bytes = self.metrics.byte_totals()
        self._cond.notify_all()

    def _retire(self, task: Task) -> None:
        """End the current task and keep its final progress; call with the lock held."""
        self._task = None
        self._finished.append(self._task_progress(task))

    def _task_progress(self, task: Task) -> TaskProgress:
        finished = task is not self._task
        participants = frozenset(task.participants)
        session = task.secagg
        if session is not None:
            stage = session.stage.name.lower()
            if session.stage is SecAggStage.COMPLETE:
                present = frozenset(session.survivors)
            elif session.stage is SecAggStage.ADVERTISE_KEYS:
                present = participants
            else:
                present = frozenset(session.expected() | session.acted())
        else:
            done = self._completed(task)
            stage = "done" if finished else "upload"
            if task.kind == pb.TASK_KIND_FINISH:
                stage = "done" if finished else "reports"
            present = frozenset(done) if finished else participants
        bytes_in, bytes_out = self.metrics.byte_totals()
        return TaskProgress(
            task_id=task.task_id,
            kind=task.kind,
            round=task.round,
            step=task.step,
            stage=stage,
            participants=participants,
            present=present,
            dropped=participants - present,
            finished=finished,
            bytes_in=bytes_in - self._shown_bytes[0],
            bytes_out=bytes_out - self._shown_bytes[1],
            epsilon=(
                self.privacy.epsilon_after(task.round)
                if task.kind == pb.TASK_KIND_TRAIN
                else None
            ),
        )

    def snapshot(self) -> dict[str, DomainRecord]:
        """Return a deep copy of the domain records, taken under the lock."""
        with self._cond:
            return copy.deepcopy(self.domains)

    def expected_upload_bytes(self, domain: str, task_id: str) -> int:
        """Return the payload size the caller's current task takes, in bytes."""
        with self._cond:
            task = self._current_task(domain, task_id)
            if task.secagg is not None:
                return task.secagg.layout.masked_length * 4
            if task.aggregator is None:
                raise WrongStageError(f"task {task_id} takes no upload")
            return task.vector_length * 8

    # Secure aggregation, RPC side

    def advertise_keys(
        self, domain: str, task_id: str, advertisement: pb.KeyAdvertisement
    ) -> None:
        """Record the caller's key advertisement for the current task."""
        with self._cond:
            self._session(domain, task_id).advertise(domain, advertisement)
            self._cond.notify_all()

    def share_keys(
        self, domain: str, task_id: str, shares: list[pb.EncryptedShare]
    ) -> None:
        """Record the caller's encrypted share bundles for its peers."""
        with self._cond:
            self._session(domain, task_id).share_keys(domain, shares)
            self._cond.notify_all()

    def consistency_check(self, domain: str, task_id: str, signature: bytes) -> None:
        """Record the caller's signature over the survivor list."""
        with self._cond:
            self._session(domain, task_id).consistency_check(domain, signature)
            self._cond.notify_all()

    def unmask(
        self,
        domain: str,
        task_id: str,
        self_mask_shares: list[pb.RevealedShare],
        mask_key_shares: list[pb.RevealedShare],
    ) -> None:
        """Record the shares the caller reveals to remove the masks."""
        with self._cond:
            self._session(domain, task_id).unmask(
                domain, self_mask_shares, mask_key_shares
            )
            self._cond.notify_all()

    def secagg_stage(
        self, domain: str, task_id: str, stage: int, wait_s: float = LONG_POLL_S
    ) -> pb.GetSecAggStageResponse:
        """Return the inputs of an aggregation stage, waiting up to ``wait_s``
        for the stage to start."""
        wanted = WIRE_STAGES.get(stage)  # type: ignore[call-overload]
        if wanted is None or wanted is SecAggStage.ADVERTISE_KEYS:
            raise InvalidRequestError(
                f"stage {stage} has no inputs to wait for; ask for SHARE_KEYS, "
                "MASKED_INPUT, CONSISTENCY_CHECK or UNMASK"
            )
        deadline = self._clock() + wait_s
        with self._cond:
            while True:
                response = self._session(domain, task_id).view(domain, wanted)
                remaining = deadline - self._clock()
                if response.ready or remaining <= 0 or self.stopping:
                    return response
                self._cond.wait(min(remaining, 1.0))

    def _session(self, domain: str, task_id: str) -> SecAggSession:
        task = self._current_task(domain, task_id)
        if task.secagg is None:
            raise WrongStageError(
                f"task {task_id} is not securely aggregated; upload in the clear"
            )
        return task.secagg

    def _require_joined(self, domain: str) -> DomainRecord:
        if domain not in self.config.domains:
            raise PermissionDeniedError(
                f"domain {domain!r} is not in this run's domains "
                f"{list(self.config.domains)}"
            )
        record = self.domains.get(domain)
        if record is None:
            raise WrongStageError(f"domain {domain!r} has not joined; call Join first")
        return record

    def _current_task(self, domain: str, task_id: str) -> Task:
        self._require_joined(domain)
        task = self._task
        if task is None or task.task_id != task_id:
            current = task.task_id if task else "none"
            raise WrongStageError(
                f"task {task_id!r} is not the current task (current: {current})"
            )
        if domain not in task.participants:
            raise WrongStageError(
                f"domain {domain!r} is not a participant of task {task_id}; "
                "it joins the next task"
            )
        return task

    # Round-loop side

    def wait_for_domains(self) -> list[str]:
        """Block until every configured domain joined, or the join deadline.

        Raises
        ------
        QuorumError
            When fewer than ``min_domains`` joined before the deadline.
        """
        deadline = self._clock() + self.config.timeouts.join_s
        expected = set(self.config.domains)
        with self._cond:
            while set(self.domains) != expected:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                if self.stopping:
                    raise StopRequestedError(
                        "the coordinator stopped while waiting for domains"
                    )
                self._cond.wait(min(remaining, 1.0))
            joined = sorted(self.domains)
        if len(joined) < self.config.min_domains:
            raise QuorumError(
                f"{len(joined)} of {len(expected)} domains joined within "
                f"timeouts.join_s={self.config.timeouts.join_s:g} s "
                f"(joined: {joined}); min_domains is {self.config.min_domains}"
            )
        missing = sorted(expected - set(joined))
        if missing:
            logger.warning("starting without domains %s", missing)
        return joined

    def run_task(self, task: Task, deadline_s: float) -> set[str]:
        """Publish ``task``, wait for all participants or the deadline, and return
        the domains that completed it.

        A participant that misses the deadline is dropped for this task only.
        A securely aggregated task gives ``deadline_s`` to its masked-input
        stage, which includes local training, and ``timeouts.stage_s`` to each
        other stage.
        """
        if task.secagg is not None:
            return self._run_secure_task(task, task.secagg, deadline_s)
        with self._cond:
            self._publish(task)
            started = self._clock()
            deadline = started + deadline_s
            while not self._task_complete(task):
                remaining = deadline - self._clock()
                if remaining <= 0 or self._stage is Stage.ABORTED or self.stopping:
                    break
                self._cond.wait(min(remaining, 1.0))
            done = self._completed(task)
            self._retire(task)
            if self.stopping and not self._task_complete(task):
                self._cond.notify_all()
                raise StopRequestedError(
                    f"task {task.task_id} abandoned: the coordinator is stopping"
                )
            self.store.record_stage(task.task_id, "COMPLETED", done)
            self.metrics.stage_seconds.labels("upload").observe(self._clock() - started)
            self.metrics.record_task(len(task.participants), len(done))
            late = sorted(task.participants - done)
            for domain in late:
                self.domains[domain].dropped = True
            self._cond.notify_all()
        if len(done) < self.config.min_domains:
            raise QuorumError(
                f"task {task.task_id}: {len(done)} of {len(task.participants)} "
                f"domains finished within {deadline_s:g} s (late: {late}); "
                f"min_domains is {self.config.min_domains}"
            )
        if late:
            logger.warning(
                "task=%s dropped domains %s after the %g s deadline; they rejoin "
                "the next task once they ask for one",
                task.task_id,
                late,
                deadline_s,
            )
        return done

    def _run_secure_task(
        self, task: Task, session: SecAggSession, deadline_s: float
    ) -> set[str]:
        stage_s = self.config.timeouts.stage_s
        try:
            with self._cond:
                self._publish(task)
                started = self._clock()
                while session.stage not in (SecAggStage.COMPLETE, SecAggStage.FAILED):
                    limit = (
                        deadline_s
                        if session.stage is SecAggStage.MASKED_INPUT
                        else stage_s
                    )
                    self._wait_for_stage(session, limit)
                    if self._stage is Stage.ABORTED:
                        raise QuorumError(f"task {task.task_id}: the run was aborted")
                    if self.stopping:
                        raise StopRequestedError(
                            f"task {task.task_id} abandoned in stage "
                            f"{session.stage.name}: the coordinator is stopping"
                        )
                    self._close_stage(task, session, started)
                    started = self._clock()
        finally:
            with self._cond:
                session.fail()
                self._retire(task)
                done = (
                    set(session.survivors)
                    if session.stage is SecAggStage.COMPLETE
                    else set()
                )
                for domain in task.participants - done:
                    if domain in self.domains:
                        self.domains[domain].dropped = True
                self.metrics.record_task(len(task.participants), len(done))
                self._cond.notify_all()
        if len(done) < self.config.min_domains:
            raise QuorumError(
                f"task {task.task_id}: {len(done)} of {len(task.participants)} "
                f"domains' inputs were aggregated; min_domains is "
                f"{self.config.min_domains}"
            )
        return done

    def _close_stage(self, task: Task, session: SecAggSession, started: float) -> None:
        """Close the session's current stage and record who acted and how long
        it took. Closing UNMASK removes the masks, so it is the aggregation time."""
        stage, acted = session.stage, session.acted()
        closing = self._clock()
        # NOTE: closing the unmask stage rebuilds and removes the masks under
        # the lock, so RPCs wait for it. That took about 1 s of CPU for 500
        # SecAgg+ clients in the benchmark.
        session.close_stage(task.task_id)
        now = self._clock()
        self.store.record_stage(task.task_id, stage.name, acted)
        self.metrics.stage_seconds.labels(stage.name.lower()).observe(now - started)
        if stage is SecAggStage.UNMASK:
            self.metrics.aggregation_seconds.observe(now - closing)
        self._cond.notify_all()

    def _wait_for_stage(self, session: SecAggSession, limit_s: float) -> None:
        """Wait under the lock until every expected domain acted, or the limit."""
        deadline = self._clock() + limit_s
        while session.acted() != session.expected():
            remaining = deadline - self._clock()
            if remaining <= 0 or self._stage is Stage.ABORTED or self.stopping:
                return
            self._cond.wait(min(remaining, 1.0))

    def _completed(self, task: Task) -> set[str]:
        if task.kind == pb.TASK_KIND_FINISH:
            return {
                d
                for d in task.participants
                if {"federated", "local_only"} <= self.domains[d].final
            }
        if task.secagg is not None:
            return task.secagg.finished()
        return set(task.uploaded)

    def _task_complete(self, task: Task) -> bool:
        return self._completed(task) == set(task.participants)

    def active_domains(self) -> frozenset[str]:
        """Return the joined domains not dropped, the participants of the next task."""
        with self._cond:
            return frozenset(d for d, r in self.domains.items() if not r.dropped)

    def wait_until_clients_saw_end(self, timeout_s: float) -> None:
        """Wait until every domain not dropped fetched DONE or ABORT, or the timeout."""
        deadline = self._clock() + timeout_s
        with self._cond:
            while not all(r.saw_end or r.dropped for r in self.domains.values()):
                remaining = deadline - self._clock()
                if remaining <= 0 or self.stopping:
                    return
                self._cond.wait(min(remaining, 1.0))


def _restore_domains(store: RunStore) -> dict[str, DomainRecord]:
    """Rebuild the records of the domains that joined before a restart."""
    reports = store.metrics()
    finals = store.finals()
    return {
        domain: DomainRecord(
            stats=stats,
            reports=reports.get(domain, {}),
            final=finals.get(domain, set()),
        )
        for domain, stats in store.domains().items()
    }
