"""The coordinator's round loop: codebook k-means, training rounds, final reports."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from common import pq
from common.accounting import PrivacySettingError, aggregate_value_bound
from common.config import CoordinatorConfig
from common.model import GlobalEncoder, global_parameter_names
from common.pb import federation_pb2 as pb
from common.secagg.vector import (
    VectorLayout,
    check_ring_fits,
    cluster_layout,
    moments_layout,
    train_layout,
)
from common.tensors import pack_arrays
from server import store as runstore
from server.aggregation import Aggregator, PlainSumAggregator
from server.checkpoints import (
    CENTROIDS,
    MODEL_PREFIX,
    codebook_checkpoint,
    global_state,
    load_checkpoint,
    round_checkpoint,
    write_checkpoint,
)
from server.errors import StopRequestedError
from server.federation import Federation, QuorumError, Stage, Task
from server.secagg import SecAggSession, SessionSettings
from server.report import write_reports

logger = logging.getLogger(__name__)

AggregatorFactory = Callable[[int], Aggregator]


def automatic_clip(config: CoordinatorConfig, max_sequences: int) -> float:
    """Return the default clipping bound of a model-delta value for one round.

    AdamW moves a parameter by about the learning rate per step, and more
    only when a gradient's scale jumps. The bound is therefore the learning
    rate times the local steps of the largest domain in one round.

    NOTE: this is an estimate of Adam's step size, not a proven bound; the
    coordinator logs the clipped fraction of every round so that a run whose
    clipping matters shows it.
    """
    train = config.train
    steps = train.local_epochs * max(1, math.ceil(max_sequences / train.batch_size))
    return train.learning_rate * steps


def initial_global_weights(config: CoordinatorConfig) -> dict[str, np.ndarray]:
    """Initialize the global encoder from the run seed, in wire order."""
    torch.manual_seed(config.train.seed)
    state = GlobalEncoder(config.model).state_dict()
    return {
        name: state[name].detach().cpu().numpy().astype(np.float32)
        for name in global_parameter_names(config.model)
    }


class RoundLoop:
    """Drive one run from joining to the final report, resuming a stored run.

    Each codebook step and round is committed to the federation's run store
    after its checkpoint file is written. A restarted loop continues after
    the last commit. A task that was in flight starts over under a new task
    id and aggregation number, so clients make fresh keys for it.

    Parameters
    ----------
    config
        The coordinator's configuration.
    federation
        The run state the RPC handlers share.
    aggregator_factory
        Builds the aggregator of one task from its vector length.
    """

    def __init__(
        self,
        config: CoordinatorConfig,
        federation: Federation,
        aggregator_factory: AggregatorFactory = PlainSumAggregator,
    ) -> None:
        self.config = config
        self.federation = federation
        self._new_aggregator = aggregator_factory
        self.store = federation.store
        self.summary: dict[str, object] = {}
        self._start = 0
        self.privacy = federation.privacy
        # Last round the training loop ran, and why it stopped before
        # train.rounds (empty when it did not).
        self._final_round = config.train.rounds
        self._stop_reason = ""

    def run(self) -> dict[str, object]:
        """Run every stage; abort the run and re-raise on a missed quorum.

        Raises
        ------
        QuorumError
            When too few domains took part; the run is aborted.
        PrivacySettingError
            When the [dp] settings cannot give the guarantee for the joined
            domains; the run is aborted before the codebook.
        StopRequestedError
            When :meth:`Federation.request_stop` was called; the task in
            flight is abandoned and the run can resume.
        """
        try:
            self._start = self.store.begin_start()
            self.store.set_status(runstore.RUNNING)
            if self.store.tasks():
                logger.info(
                    "run=%s resuming (start %d) with domains %s",
                    self.config.run_id,
                    self._start,
                    sorted(self.federation.domains),
                )
            else:
                self.federation.wait_for_domains()
            self._plan_privacy()
            self.federation.move_to(Stage.CODEBOOK)
            centroids, weights, first_round = self._resume_point()

            self.federation.move_to(Stage.TRAINING)
            for round_index in range(first_round, self.config.train.rounds + 1):
                if not self._round_within_budget(round_index):
                    break
                weights = self._train_round(round_index, centroids, weights)

            self.federation.move_to(Stage.FINISHING)
            self._finish(centroids, weights)
            self.federation.move_to(Stage.DONE)
        except StopRequestedError as error:
            logger.warning("run=%s stopped: %s", self.config.run_id, error)
            self.store.set_status(runstore.RUNNING, str(error))
            raise
        except (QuorumError, PrivacySettingError) as error:
            self.store.set_status(runstore.ABORTED, str(error))
            self.federation.abort(str(error))
            raise
        except Exception as error:
            # Tell the clients, so none waits for a task that will never come.
            self.store.set_status(runstore.ABORTED, f"coordinator error: {error}")
            self.federation.abort(f"coordinator error: {error}")
            raise
        return self.summary

    def _resume_point(
        self,
    ) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
        """Return the centroids, the global weights and the next round to run."""
        last = self.store.last_commit("round")
        if last is None:
            centroids = self._train_codebook()
            return centroids, initial_global_weights(self.config), 1
        initial = initial_global_weights(self.config)
        expected = {
            name: tuple(value.shape)
            for name, value in global_state(self._zero_centroids(), initial).items()
        }
        arrays = load_checkpoint(self.store.checkpoint_path(last), expected)
        weights = {name: arrays[MODEL_PREFIX + name] for name in initial}
        logger.info(
            "run=%s resumes after committed round %d", self.config.run_id, last.number
        )
        return arrays[CENTROIDS], weights, last.number + 1

    def _zero_centroids(self) -> np.ndarray:
        model = self.config.model
        sub_dim = model.text_dim // model.n_subspaces
        return np.zeros(
            (model.n_subspaces, model.n_centroids, sub_dim), dtype=np.float32
        )

    def _task(
        self,
        kind: int,
        base_id: str,
        layout: VectorLayout | None,
        download: dict[str, np.ndarray] | None,
        round_index: int = 0,
        step: int = 0,
    ) -> Task:
        """Build a task and record it in the store as in flight.

        A restarted coordinator appends its start number to the task id
        (``train-3.2``), so requests meant for the attempt of an earlier
        start fail as stale instead of reaching the new one.
        """
        participants = self.federation.active_domains()
        vector_length = layout.length if layout is not None else 0
        secure = self.config.secagg.enabled and layout is not None
        task_id = base_id if self._start <= 1 else f"{base_id}.{self._start}"
        aggregation = self.store.next_aggregation() if secure else 0
        self.store.begin_task(
            task_id,
            base_id,
            _KIND_NAMES[kind],
            round_index if kind in (pb.TASK_KIND_TRAIN, pb.TASK_KIND_FINISH) else step,
            self._start,
            aggregation,
            participants,
        )
        return Task(
            kind=kind,
            task_id=task_id,
            participants=participants,
            vector_length=vector_length,
            download=pack_arrays(download) if download is not None else None,
            aggregator=(
                self._new_aggregator(vector_length)
                if vector_length and not secure
                else None
            ),
            round=round_index,
            step=step,
            secagg=(
                self._session(kind, participants, layout, aggregation)
                if secure and layout is not None
                else None
            ),
        )

    def _session(
        self,
        kind: int,
        participants: frozenset[str],
        layout: VectorLayout,
        aggregation: int,
    ) -> SecAggSession:
        """Build the secure aggregation of one task, after the ring size check."""
        secagg = self.config.secagg
        weight_cap = self._weight_cap(kind, participants)
        check_ring_fits(layout, secagg.levels, len(participants), weight_cap)
        settings = SessionSettings(
            run_id=self.config.run_id,
            mode=secagg.mode,
            threshold=secagg.threshold,
            neighbours=secagg.neighbours,
            levels=secagg.levels,
        )
        return SecAggSession(settings, aggregation, participants, layout, weight_cap)

    def _weight_cap(self, kind: int, participants: frozenset[str]) -> int:
        """Return the largest weight a participant may send: its training
        sequences (one per user) for a round, its items for the codebook."""
        records = self.federation.snapshot()
        sizes = [
            records[d].stats.n_users
            if kind == pb.TASK_KIND_TRAIN
            else records[d].stats.n_items
            for d in participants
            if d in records
        ]
        return max(sizes, default=1)

    def _run_task(self, task: Task, deadline_s: float) -> set[str]:
        """Run ``task`` and record a failed or abandoned attempt in the store."""
        try:
            return self.federation.run_task(task, deadline_s)
        except StopRequestedError as error:
            self.store.end_task(task.task_id, runstore.ABANDONED, str(error))
            raise
        except Exception as error:
            self.store.end_task(task.task_id, runstore.FAILED, str(error))
            raise

    def _aggregate(self, task: Task) -> tuple[np.ndarray, set[str]]:
        """Return the task's aggregate and the domains whose input it contains."""
        done = self._run_task(task, self.config.timeouts.round_s)
        if task.secagg is not None:
            total = task.secagg.total()
            self._log_clipping(task, task.secagg)
            return total, done
        if task.aggregator is None:
            raise RuntimeError(f"task {task.task_id} has no aggregator")
        started = time.monotonic()
        total = task.aggregator.total()
        self.federation.metrics.aggregation_seconds.observe(time.monotonic() - started)
        return total, done

    def _log_clipping(self, task: Task, session: SecAggSession) -> None:
        quantized = sum(
            s.length for s in session.layout.segments if s.kind == "quantized"
        )
        values = quantized * max(1, len(session.survivors))
        fraction = session.clipped_total / values if values else 0.0
        level = (
            logging.WARNING
            if fraction > self.config.secagg.clipped_warning_fraction
            else logging.INFO
        )
        logger.log(
            level,
            "task=%s clipped %.4f%% of %d values (secagg.clip or "
            "secagg.group_clip sets the bound)",
            task.task_id,
            100 * fraction,
            values,
        )

    def _train_layout(self, weights: dict[str, np.ndarray]) -> VectorLayout:
        secagg = self.config.secagg
        if self.config.dp.aggregate:
            # Noised values are wider than deltas; clipping them after the
            # noise would change the noise the accountant assumes.
            default = aggregate_value_bound(
                self.config.dp, self.privacy.aggregate_noise_multiplier
            )
        elif secagg.clip > 0:
            default = secagg.clip
        else:
            participants = self.federation.active_domains()
            default = automatic_clip(
                self.config, self._weight_cap(pb.TASK_KIND_TRAIN, participants)
            )
        tensors = [(name, value.size) for name, value in weights.items()]
        bounds = [
            secagg.group_clip.get(name.split(".")[0], default) for name in weights
        ]
        return train_layout(tensors, bounds)

    def _train_codebook(self) -> np.ndarray:
        """Run the federated k-means of the product-quantization codebook,
        from the step after the last committed one."""
        model = self.config.model
        seed = self.config.train.seed
        sub_dim = model.text_dim // model.n_subspaces

        last = self.store.last_commit("codebook")
        if last is not None:
            expected = {CENTROIDS: self._zero_centroids().shape}
            path = self.store.checkpoint_path(last)
            centroids = load_checkpoint(path, expected)[CENTROIDS]
            logger.info("codebook resumes after committed step=%d", last.number)
        else:
            centroids = self._initial_centroids()

        layout = cluster_layout(model.n_subspaces, model.n_centroids, sub_dim)
        first = last.number + 1 if last is not None else 1
        for step in range(first, self.config.train.kmeans_iterations + 1):
            task = self._task(
                pb.TASK_KIND_CODEBOOK_STEP,
                f"codebook-{step}",
                layout,
                {"centroids": centroids},
                step=step,
            )
            total, done = self._aggregate(task)
            sums, counts = pq.unpack_cluster_stats(
                total, model.n_subspaces, model.n_centroids, sub_dim
            )
            centroids, reseeded = pq.update_centroids(
                centroids, sums, counts, pq.iteration_rng(seed, step)
            )
            self._commit_codebook(task, step, centroids, done)
            logger.info("codebook step=%d reseeded_clusters=%d", step, reseeded)
        return centroids

    def _initial_centroids(self) -> np.ndarray:
        """Draw the initial centroids from the summed moments (k-means step 0)."""
        model = self.config.model
        task = self._task(
            pb.TASK_KIND_CODEBOOK_MOMENTS,
            "codebook-0",
            moments_layout(model.text_dim),
            None,
            step=0,
        )
        total, done = self._aggregate(task)
        total_sum, total_sq, count = pq.unpack_moments(total, model.text_dim)
        centroids = pq.initial_centroids(
            total_sum,
            total_sq,
            count,
            model.n_subspaces,
            model.n_centroids,
            self.config.train.seed,
        )
        self._commit_codebook(task, 0, centroids, done)
        logger.info("codebook initialized from %d item embeddings", int(count))
        return centroids

    def _commit_codebook(
        self, task: Task, step: int, centroids: np.ndarray, survivors: set[str]
    ) -> None:
        path = codebook_checkpoint(self.config.state_dir, step)
        metadata = {"run_id": self.config.run_id, "codebook_step": str(step)}
        write_checkpoint(path, {CENTROIDS: centroids}, metadata)
        self.store.commit(task.task_id, "codebook", step, path, survivors)

    def _train_round(
        self, round_index: int, centroids: np.ndarray, weights: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Run one FedAvg round and return the new global weights."""
        logger.info("round=%d started", round_index)
        task = self._task(
            pb.TASK_KIND_TRAIN,
            f"train-{round_index}",
            self._train_layout(weights),
            global_state(centroids, weights),
            round_index=round_index,
        )
        total, done = self._aggregate(task)
        weight = total[-1]
        if not weight > 0:
            raise QuorumError(
                f"round {round_index}: the summed client weight is {weight}, not positive"
            )
        mean_delta = total[:-1] / weight

        updated = {}
        offset = 0
        for name, value in weights.items():
            delta = mean_delta[offset : offset + value.size].reshape(value.shape)
            updated[name] = (value + delta).astype(np.float32)
            offset += value.size
        path = round_checkpoint(self.config.state_dir, round_index)
        metadata = {"run_id": self.config.run_id, "round": str(round_index)}
        write_checkpoint(path, global_state(centroids, updated), metadata)
        privacy = self.privacy.round_record(round_index)
        self.store.commit(task.task_id, "round", round_index, path, done, privacy)
        self.federation.metrics.record_round(round_index)
        logger.info("round=%d committed, checkpoint %s", round_index, path)
        if privacy is not None:
            self._log_privacy(privacy)
        return updated

    def _plan_privacy(self) -> None:
        """Fix each joined domain's DP-SGD noise and check the budget allows
        round 1, so a run that cannot keep its guarantee never starts."""
        if not self.privacy.enabled:
            return
        self.privacy.plan(
            {name: record.stats for name, record in self.federation.snapshot().items()}
        )
        self._final_round = self.privacy.last_round_within_budget()
        if self._final_round < self.config.train.rounds:
            logger.warning(
                "run=%s the privacy budget allows %d of train.rounds=%d rounds",
                self.config.run_id,
                self._final_round,
                self.config.train.rounds,
            )

    def _round_within_budget(self, round_index: int) -> bool:
        """Return False, and log why, when ``round_index`` would exceed a budget."""
        if self.privacy.enabled:
            # A domain that joined late gets its mechanism before it trains.
            self.privacy.plan(
                {name: r.stats for name, r in self.federation.snapshot().items()}
            )
            self._final_round = self.privacy.last_round_within_budget()
        if round_index <= self._final_round:
            return True
        self._stop_reason = self.privacy.stop_message(round_index)
        logger.warning("run=%s %s", self.config.run_id, self._stop_reason)
        return False

    def _log_privacy(self, record: dict[str, object]) -> None:
        self.federation.metrics.record_privacy(record)
        aggregate = record.get("aggregate_epsilon")
        logger.info(
            "round=%d privacy spent: user-level epsilon=%.4g at delta=%g%s",
            record["round"],
            record["epsilon"],
            record["delta"],
            ""
            if aggregate is None
            else f", domain-level epsilon={aggregate:.4g} at delta="
            f"{record['aggregate_delta']:g}",
        )

    def _finish(self, centroids: np.ndarray, weights: dict[str, np.ndarray]) -> None:
        """Hand out the final weights, wait for every domain's final reports and
        write the reports into state_dir and the store."""
        final_round = min(self._final_round, self.config.train.rounds)
        task = self._task(
            pb.TASK_KIND_FINISH,
            "finish",
            None,
            global_state(centroids, weights),
            round_index=final_round,
        )
        self._run_task(task, self.config.timeouts.report_s)
        self.summary = write_reports(
            self.config.state_dir,
            self.federation.snapshot(),
            self.privacy.domain_summary(final_round),
        )
        for name in ("metrics.json", "history.json"):
            content = (self.config.state_dir / name).read_text(encoding="utf-8")
            self.store.save_report(name, content)
        self.store.end_task(task.task_id, runstore.COMMITTED)
        self.store.set_status(runstore.DONE, self._stop_reason)


_KIND_NAMES: dict[int, str] = {
    pb.TASK_KIND_CODEBOOK_MOMENTS: "codebook",
    pb.TASK_KIND_CODEBOOK_STEP: "codebook",
    pb.TASK_KIND_TRAIN: "round",
    pb.TASK_KIND_FINISH: "finish",
}
