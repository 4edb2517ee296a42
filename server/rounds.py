"""The coordinator's round loop: codebook k-means, training rounds, final reports."""

from __future__ import annotations

import logging
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
from common.tensors import pack_arrays
from server.aggregation import Aggregator, PlainSumAggregator
from server.federation import Federation, QuorumError, Stage, Task
from server.report import write_reports

logger = logging.getLogger(__name__)

AggregatorFactory = Callable[[int], Aggregator]


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
        vector_length: int,
        download: dict[str, np.ndarray] | None,
        round_index: int = 0,
        step: int = 0,
    ) -> Task:
        return Task(
            kind=kind,
            task_id=task_id,
            participants=self.federation.active_domains(),
            vector_length=vector_length,
            download=pack_arrays(download) if download is not None else None,
            aggregator=self._new_aggregator(vector_length) if vector_length else None,
            round=round_index,
            step=step,
        )

    def _aggregate(self, task: Task) -> np.ndarray:
        self.federation.run_task(task, self.config.timeouts.round_s)
        if task.aggregator is None:
            raise RuntimeError(f"task {task.task_id} has no aggregator")
        return task.aggregator.total()

    def _train_codebook(self) -> np.ndarray:
        """Run the federated k-means of the product-quantization codebook."""
        model = self.config.model
        seed = self.config.train.seed
        sub_dim = model.text_dim // model.n_subspaces

        task = self._task(
            pb.TASK_KIND_CODEBOOK_MOMENTS,
            "codebook-0",
            2 * model.text_dim + 1,
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

        length = model.n_subspaces * model.n_centroids * (sub_dim + 1)
        for step in range(1, self.config.train.kmeans_iterations + 1):
            task = self._task(
                pb.TASK_KIND_CODEBOOK_STEP,
                f"codebook-{step}",
                length,
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
        n_values = sum(w.size for w in weights.values())
        task = self._task(
            pb.TASK_KIND_TRAIN,
            f"train-{round_index}",
            n_values + 1,
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
            0,
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
