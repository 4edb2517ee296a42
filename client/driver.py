"""A domain client's protocol loop: join, then do each task the coordinator hands out."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import torch

from client.aggregation import PlainUpload, SecureUpload
from client.baseline import train_local_only
from client.connection import CoordinatorClient, StaleTaskError
from client.data import DomainData, Split
from client.itemcodes import cluster_stats, moment_stats
from client.privacy import DomainPrivacy
from client.progress import EpochProgress
from client.secagg import Identity, RefusalError, load_identity
from client.session import (
    ITEM_IDS_KEY,
    MODEL_FILE,
    DomainModel,
    Evaluation,
    best_evaluation,
    domain_seed,
    item_code_table,
)
from common import pq
from common.accounting import PrivacySettingError
from common.config import ClientConfig, ModelConfig, PrivacyConfig, TrainConfig
from common.pb import federation_pb2 as pb
from common.runconfig import (
    PROTOCOL_VERSION,
    privacy_config_from_proto,
    run_config_from_proto,
)

logger = logging.getLogger(__name__)


class RunAbortedError(RuntimeError):
    """The coordinator aborted the run; the message is its reason."""


@dataclass
class DomainInputs:
    """Inputs a client brings to the run: its data, split and item embeddings."""

    data: DomainData
    split: Split
    embeddings: np.ndarray


class DomainClient:
    """Run one domain's side of a federation until the coordinator sends DONE."""

    def __init__(
        self, config: ClientConfig, coordinator: CoordinatorClient, inputs: DomainInputs
    ) -> None:
        self.config = config
        self.coordinator = coordinator
        self.inputs = inputs
        self.model_config: ModelConfig | None = None
        self.train_config: TrainConfig | None = None
        self.seed = 0
        self.state: DomainModel | None = None
        self.centroids: np.ndarray | None = None
        self.secagg = pb.SecAggConfig()
        self.dp = PrivacyConfig()
        self.identity: Identity | None = load_identity(config.tls)
        # Bars on a terminal; log lines alone otherwise.
        self.progress = EpochProgress(config.domain)

    def run(self) -> None:
        """Join and serve tasks; raise RunAbortedError if the run is aborted."""
        self._join()
        handlers = {
            pb.TASK_KIND_CODEBOOK_MOMENTS: self._codebook_moments,
            pb.TASK_KIND_CODEBOOK_STEP: self._codebook_step,
            pb.TASK_KIND_TRAIN: self._train,
            pb.TASK_KIND_FINISH: self._finish,
        }
        while True:
            task = self.coordinator.next_task()
            if task.kind == pb.TASK_KIND_WAIT:
                continue
            if task.kind == pb.TASK_KIND_DONE:
                logger.info("domain=%s run finished", self.config.domain)
                return
            if task.kind == pb.TASK_KIND_ABORT:
                raise RunAbortedError(task.message)
            handler = handlers.get(task.kind)
            if handler is None:
                raise RunAbortedError(f"unknown task kind {task.kind}; upgrade fedcdr")
            try:
                handler(task)
            except StaleTaskError as error:
                logger.warning(
                    "domain=%s task=%s is over, waiting for the next one: %s",
                    self.config.domain,
                    task.task_id,
                    error,
                )
            except RefusalError as error:
                logger.error(
                    "domain=%s task=%s secure aggregation refused, nothing secret "
                    "was revealed: %s",
                    self.config.domain,
                    task.task_id,
                    error,
                )

    def _join(self) -> None:
        data = self.inputs.data
        stats = pb.DomainStats(
            n_users=data.n_users,
            n_items=data.n_items,
            n_interactions=data.n_interactions,
        )
        response = self.coordinator.join(stats, PROTOCOL_VERSION)
        self.model_config, self.train_config = run_config_from_proto(response.config)
        self.secagg = response.secagg
        self.dp = privacy_config_from_proto(response.dp)
        if self.dp.enabled:
            logger.info(
                "domain=%s trains with user-level DP-SGD (max_grad_norm=%g, "
                "delta=%g)%s",
                self.config.domain,
                self.dp.max_grad_norm,
                self.dp.delta,
                " and noises its round updates" if self.dp.aggregate else "",
            )
        if (
            self.secagg.enabled
            and self.secagg.mode == "active"
            and self.identity is None
        ):
            raise RunAbortedError(
                "the run uses active-mode secure aggregation, which signs keys with "
                "the domain certificate; set tls.ca, tls.cert and tls.key"
            )
        if not self.secagg.enabled:
            logger.warning(
                "domain=%s the run aggregates in the clear: the coordinator sees "
                "this domain's updates",
                self.config.domain,
            )
        if self.inputs.embeddings.shape[1] != self.model_config.text_dim:
            raise RunAbortedError(
                f"item embeddings have {self.inputs.embeddings.shape[1]} dimensions, "
                f"the run expects text_dim={self.model_config.text_dim}"
            )
        self.seed = domain_seed(
            self.train_config.seed, self.config.domain, self.config.seed
        )
        logger.info("domain=%s joined run=%s", self.config.domain, response.run_id)

    def _configs(self) -> tuple[ModelConfig, TrainConfig]:
        if self.model_config is None or self.train_config is None:
            raise RuntimeError("the client has not joined a run yet")
        return self.model_config, self.train_config

    def _codebook_moments(self, task: pb.GetTaskResponse) -> None:
        upload = self._begin_upload(task)
        total, squares, count = moment_stats(self.inputs.embeddings)
        self._upload(task, upload, pq.pack_moments(total, squares, count))

    def _codebook_step(self, task: pb.GetTaskResponse) -> None:
        upload = self._begin_upload(task)
        centroids = self.coordinator.download(task.task_id)["centroids"]
        sums, counts = cluster_stats(self.inputs.embeddings, centroids)
        self._upload(task, upload, pq.pack_cluster_stats(sums, counts))

    def _train(self, task: pb.GetTaskResponse) -> None:
        upload = self._begin_upload(task)
        state = self._load(task)
        self._evaluate_and_report(state, task.round - 1, final=False)
        _, train_config = self._configs()
        label = f"round {task.round}"
        with self.progress.epochs(label, train_config.local_epochs) as on_epoch:
            try:
                vector = state.train_round(on_epoch)
            except PrivacySettingError as error:
                raise RunAbortedError(str(error)) from None
        self._upload(task, upload, vector)

    def _begin_upload(self, task: pb.GetTaskResponse) -> PlainUpload | SecureUpload:
        """Start the task's aggregation; the key stages run before training."""
        if not task.HasField("secagg"):
            if self.secagg.enabled:
                raise RefusalError(
                    f"task {task.task_id} asks for an upload in the clear, but the "
                    "run uses secure aggregation"
                )
            return PlainUpload(self.coordinator, task)
        upload = SecureUpload(
            self.coordinator, task, self.secagg, self.identity, self.seed
        )
        upload.start()
        return upload

    def _finish(self, task: pb.GetTaskResponse) -> None:
        state = self._load(task)
        tune = self.config.prompt.epochs > 0
        self._evaluate_and_report(state, task.round, final=not tune)
        if tune:
            # Tune the prompt on the best pre-trained global part; the result
            # replaces this round's report, so the coordinator receives the final model.
            logger.info("domain=%s tuning the local prompt", self.config.domain)
            state.restore_best()
            tuned = best_evaluation(state.tune_prompts(task.round))
            self._keep_and_report(state, tuned, final=True)

        model_config, train_config = self._configs()
        logger.info("domain=%s training the local-only baseline", self.config.domain)
        history = train_local_only(
            self.inputs.embeddings,
            self.inputs.split,
            model_config,
            train_config,
            self.seed,
        )
        self.coordinator.report(
            "local_only", [h.to_proto() for h in history], final=True
        )

    def _load(self, task: pb.GetTaskResponse) -> DomainModel:
        """Download the task's global state into the domain model, building it once."""
        arrays = self.coordinator.download(task.task_id)
        if self.state is None:
            self.centroids = arrays["centroids"]
            codes = item_code_table(self.inputs.embeddings, self.centroids)
            try:
                self.state = self._build_model(codes)
            except PrivacySettingError as error:
                raise RunAbortedError(str(error)) from None
        self.state.load_global(arrays)
        return self.state

    def _build_model(self, item_codes: torch.Tensor) -> DomainModel:
        """Build the domain model; client.distributed overrides it."""
        model_config, train_config = self._configs()
        return DomainModel(
            model_config,
            train_config,
            self.inputs.split,
            item_codes,
            self.seed,
            self.config.prompt,
            self._privacy(),
            self.config.domain,
        )

    def _privacy(self) -> DomainPrivacy | None:
        """Return the DP-SGD settings of this domain, None when DP is off.

        The user count is the one sent at join, so the coordinator's
        accountant derives the same sampling rate and noise multiplier.
        """
        if not self.dp.enabled:
            return None
        return DomainPrivacy(
            self.dp,
            self.inputs.data.n_users,
            self.dp.aggregate_noise_multiplier,
        )

    def _evaluate_and_report(
        self, state: DomainModel, round_index: int, final: bool
    ) -> None:
        result = state.evaluate(round_index)
        logger.info(
            "domain=%s round=%d valid_ndcg@10=%.4f valid_loss=%.4f",
            self.config.domain,
            round_index,
            result.valid["ndcg@10"],
            result.valid_loss,
        )
        self._keep_and_report(state, result, final)

    def _keep_and_report(
        self, state: DomainModel, result: Evaluation, final: bool
    ) -> None:
        extra = {"codebook.centroids": torch.from_numpy(np.asarray(self.centroids))}
        metadata = {
            "domain": self.config.domain,
            "run_id": self.coordinator.run_id,
            ITEM_IDS_KEY: json.dumps(list(self.inputs.data.item_ids)),
        }
        state.keep_if_best(result, self.config.work_dir / MODEL_FILE, metadata, extra)
        self.coordinator.report("federated", [result.to_proto()], final=final)

    def _upload(
        self,
        task: pb.GetTaskResponse,
        upload: PlainUpload | SecureUpload,
        vector: np.ndarray,
    ) -> None:
        if vector.shape != (task.vector_length,):
            raise RunAbortedError(
                f"task {task.task_id} expects {task.vector_length} values, "
                f"this client computed {vector.shape[0]}; the client and coordinator "
                "disagree on the model shape"
            )
        upload.submit(vector)
