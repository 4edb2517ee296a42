"""Upload of one task's vector: in the clear, or through the secure-aggregation stages."""

from __future__ import annotations

import logging

import numpy as np

from client.connection import CoordinatorClient
from client.secagg import Identity, Participant
from common.pb import federation_pb2 as pb
from common.secagg.vector import SECAGG_ENCODING

logger = logging.getLogger(__name__)


class PlainUpload:
    """Upload a task's float64 vector in the clear (secure aggregation off)."""

    def __init__(
        self, coordinator: CoordinatorClient, task: pb.GetTaskResponse
    ) -> None:
        self._coordinator = coordinator
        self._task = task

    def submit(self, vector: np.ndarray) -> None:
        self._coordinator.upload(self._task.task_id, vector)


class SecureUpload:
    """Take part in a task's secure aggregation through the coordinator.

    :meth:`start` advertises keys and sends shares before the client computes
    its vector, so the key stages overlap with local training; :meth:`submit`
    masks and uploads the vector and completes the remaining stages.

    Raises
    ------
    client.secagg.RefusalError
        From either method, when the coordinator relayed something that fails
        a check. Nothing secret has been sent at that point.
    client.connection.StaleTaskError
        When the aggregation ended without this client.
    """

    def __init__(
        self,
        coordinator: CoordinatorClient,
        task: pb.GetTaskResponse,
        secagg: pb.SecAggConfig,
        identity: Identity | None,
        seed: int,
    ) -> None:
        self._coordinator = coordinator
        self._task_id = task.task_id
        rng = np.random.default_rng([seed, task.secagg.aggregation_round])
        self._participant = Participant(
            coordinator.domain, coordinator.run_id, secagg, task.secagg, identity, rng
        )

    def start(self) -> None:
        """Run stages 1 and 2: advertise keys, then share them with the peers."""
        coordinator = self._coordinator
        coordinator.advertise_keys(self._task_id, self._participant.advertise())
        roster = coordinator.secagg_stage(self._task_id, pb.SEC_AGG_STAGE_SHARE_KEYS)
        coordinator.share_keys(self._task_id, self._participant.share_keys(roster))

    def submit(self, vector: np.ndarray) -> None:
        """Run stages 3 to 5: masked input, consistency check and unmasking."""
        coordinator = self._coordinator
        task_id = self._task_id

        # Stage 3: mask the input with the peers that shared keys.
        inbox = coordinator.secagg_stage(task_id, pb.SEC_AGG_STAGE_MASKED_INPUT)
        payload, n_clipped = self._participant.masked_input(inbox, vector)
        if n_clipped:
            logger.info("task=%s clipped %d values before masking", task_id, n_clipped)
        coordinator.upload_payload(task_id, payload, SECAGG_ENCODING)

        # Stage 4: sign the survivor list.
        survivors = coordinator.secagg_stage(
            task_id, pb.SEC_AGG_STAGE_CONSISTENCY_CHECK
        )
        signature = self._participant.consistency_check(survivors)
        coordinator.consistency_check(task_id, signature)

        # Stage 5: reveal one kind of share per client.
        request = coordinator.secagg_stage(task_id, pb.SEC_AGG_STAGE_UNMASK)
        seeds, keys = self._participant.unmask(request)
        coordinator.unmask(task_id, seeds, keys)
        logger.info(
            "task=%s secure aggregation done: %d survivors, %d dropped",
            task_id,
            len(request.survivors),
            len(request.dropped),
        )
