"""An in-process transport from a domain client's upload code to a Federation.

It calls the coordinator's run state directly, so tests of the round loop can
use the real secure-aggregation client without gRPC. The gRPC path itself is
covered by the servicer and integration tests.
"""

from __future__ import annotations

import numpy as np

from common.pb import federation_pb2 as pb
from server.errors import WrongStageError
from server.federation import Federation

from client.connection import StaleTaskError


class InProcessCoordinator:
    """The methods of CoordinatorClient that uploads use, over a Federation."""

    def __init__(self, federation: Federation, domain: str) -> None:
        self.federation = federation
        self.domain = domain
        self.run_id = federation.config.run_id

    def _stale(self, call, *args):
        try:
            return call(*args)
        except WrongStageError as error:
            raise StaleTaskError(str(error)) from None

    def upload(self, task_id: str, vector: np.ndarray) -> None:
        payload = np.ascontiguousarray(vector, dtype="<f8").tobytes()
        self.upload_payload(task_id, payload, "float64-le")

    def upload_payload(self, task_id: str, payload: bytes, encoding: str) -> None:
        self._stale(self.federation.upload, self.domain, task_id, encoding, payload)

    def advertise_keys(self, task_id: str, advertisement: pb.KeyAdvertisement) -> None:
        self._stale(self.federation.advertise_keys, self.domain, task_id, advertisement)

    def share_keys(self, task_id: str, shares: list) -> None:
        self._stale(self.federation.share_keys, self.domain, task_id, shares)

    def consistency_check(self, task_id: str, signature: bytes) -> None:
        self._stale(self.federation.consistency_check, self.domain, task_id, signature)

    def unmask(self, task_id: str, seeds: list, keys: list) -> None:
        self._stale(self.federation.unmask, self.domain, task_id, seeds, keys)

    def secagg_stage(self, task_id: str, stage: int) -> pb.GetSecAggStageResponse:
        while True:
            response = self._stale(
                self.federation.secagg_stage, self.domain, task_id, stage, 1.0
            )
            if response.ready:
                return response
