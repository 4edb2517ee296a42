"""The coordinator's round loop: codebook k-means, training rounds, final reports."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save as save_safetensors

from common import pq
from common.atomic import write_bytes_atomic
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
from server.aggregation import Aggregator, PlainSumAggregator
from server.federation import Federation, QuorumError, Stage, Task
from server.secagg import SecAggSession, SessionSettings
from server.report import write_reports

logger = logging.getLogger(__name__)

AggregatorFactory = Callable[[int], Aggregator]


def automatic_clip(config: CoordinatorConfig, max_sequences: int) -> float:
    """Return the default clipping bound of a model-delta value for one round.

    AdamW moves a parameter by about the learning rate per step (more only
    while its gradient's sign keeps changing little and its scale jumps), so
    the bound is the learning rate times the local steps of the largest
    domain in one round.

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
    """Drive one run from joining to the final report.

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
        self.summary: dict[str, object] = {}
        self._aggregations = 0

    def run(self) -> dict[str, object]:
        """Run every stage; abort the run and re-raise on a missed quorum."""
        try:
            self.federation.wait_for_domains()
            self.federation.move_to(Stage.CODEBOOK)
            centroids = self._train_codebook()

            self.federation.move_to(Stage.TRAINING)
            weights = initial_global_weights(self.config)
            for round_index in range(1, self.config.train.rounds + 1):
                weights = self._train_round(round_index, centroids, weights)

            self.federation.move_to(Stage.FINISHING)
            self._finish(centroids, weights)
            self.summary = write_reports(
                self.config.state_dir, self.federation.snapshot()
            )
            self.federation.move_to(Stage.DONE)
        except QuorumError as error:
            self.federation.abort(str(error))
            raise
        except Exception as error:
            # Tell the clients, so none waits for a task that will never come.
            self.federation.abort(f"coordinator error: {error}")
            raise
        return self.summary

    def _task(
        self,
        kind: int,
        task_id: str,
        layout: VectorLayout | None,
        download: dict[str, np.ndarray] | None,
        round_index: int = 0,
        step: int = 0,
    ) -> Task:
        participants = self.federation.active_domains()
        vector_length = layout.length if layout is not None else 0
        secure = self.config.secagg.enabled and layout is not None
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
                self._session(kind, participants, layout)
                if secure and layout is not None
                else None
            ),
        )

    def _session(
        self, kind: int, participants: frozenset[str], layout: VectorLayout
    ) -> SecAggSession:
        """Build the secure aggregation of one task, after the ring size check."""
        secagg = self.config.secagg
        weight_cap = self._weight_cap(kind, participants)
        check_ring_fits(layout, secagg.levels, len(participants), weight_cap)
        self._aggregations += 1
        settings = SessionSettings(
            run_id=self.config.run_id,
            mode=secagg.mode,
            threshold=secagg.threshold,
            neighbours=secagg.neighbours,
            levels=secagg.levels,
        )
        return SecAggSession(
            settings, self._aggregations, participants, layout, weight_cap
        )

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

    def _aggregate(self, task: Task) -> np.ndarray:
        self.federation.run_task(task, self.config.timeouts.round_s)
        if task.secagg is not None:
            total = task.secagg.total()
            self._log_clipping(task, task.secagg)
            return total
        if task.aggregator is None:
            raise RuntimeError(f"task {task.task_id} has no aggregator")
        return task.aggregator.total()

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
        if secagg.clip > 0:
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
        """Run the federated k-means of the product-quantization codebook."""
        model = self.config.model
        seed = self.config.train.seed
        sub_dim = model.text_dim // model.n_subspaces

        task = self._task(
            pb.TASK_KIND_CODEBOOK_MOMENTS,
            "codebook-0",
            moments_layout(model.text_dim),
            None,
            step=0,
        )
        total_sum, total_sq, count = pq.unpack_moments(
            self._aggregate(task), model.text_dim
        )
        centroids = pq.initial_centroids(
            total_sum, total_sq, count, model.n_subspaces, model.n_centroids, seed
        )
        logger.info("codebook initialized from %d item embeddings", int(count))

        layout = cluster_layout(model.n_subspaces, model.n_centroids, sub_dim)
        for step in range(1, self.config.train.kmeans_iterations + 1):
            task = self._task(
                pb.TASK_KIND_CODEBOOK_STEP,
                f"codebook-{step}",
                layout,
                {"centroids": centroids},
                step=step,
            )
            sums, counts = pq.unpack_cluster_stats(
                self._aggregate(task), model.n_subspaces, model.n_centroids, sub_dim
            )
            centroids, reseeded = pq.update_centroids(
                centroids, sums, counts, pq.iteration_rng(seed, step)
            )
            logger.info("codebook step=%d reseeded_clusters=%d", step, reseeded)
        return centroids

    def _train_round(
        self, round_index: int, centroids: np.ndarray, weights: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Run one FedAvg round and return the new global weights."""
        logger.info("round=%d started", round_index)
        task = self._task(
            pb.TASK_KIND_TRAIN,
            f"train-{round_index}",
            self._train_layout(weights),
            _download_state(centroids, weights),
            round_index=round_index,
        )
        total = self._aggregate(task)
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
        self._checkpoint(round_index, centroids, updated)
        logger.info("round=%d finished", round_index)
        return updated

    def _finish(self, centroids: np.ndarray, weights: dict[str, np.ndarray]) -> None:
        """Hand out the final weights and wait for every domain's final reports."""
        task = self._task(
            pb.TASK_KIND_FINISH,
            "finish",
            None,
            _download_state(centroids, weights),
            round_index=self.config.train.rounds,
        )
        self.federation.run_task(task, self.config.timeouts.report_s)

    def _checkpoint(
        self, round_index: int, centroids: np.ndarray, weights: dict[str, np.ndarray]
    ) -> Path:
        path = (
            self.config.state_dir
            / "checkpoints"
            / f"round-{round_index:04d}.safetensors"
        )
        data = save_safetensors(
            _download_state(centroids, weights),
            metadata={"run_id": self.config.run_id, "round": str(round_index)},
        )
        try:
            write_bytes_atomic(path, data)
        except OSError as error:
            raise RuntimeError(
                f"cannot write checkpoint {path}: {error}; check that state_dir "
                f"{self.config.state_dir} and its checkpoints folder are writable "
                "folders"
            ) from None
        logger.info("round=%d checkpoint written to %s", round_index, path)
        return path


def _download_state(
    centroids: np.ndarray, weights: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    return {"centroids": centroids, **{f"model/{k}": v for k, v in weights.items()}}
