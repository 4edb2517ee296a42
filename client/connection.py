"""The client's channel to the coordinator, with retries on transient failures."""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
import numpy as np

from common import tls
from common.config import ClientConfig
from common.pb import federation_pb2 as pb
from common.pb import federation_pb2_grpc as pb_grpc
from common.tensors import (
    MAX_MESSAGE_BYTES,
    PLAIN_ENCODING,
    assemble_tensor_chunks,
    split_payload,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class RejectedError(RuntimeError):
    """The coordinator rejected this client; retrying will not help."""


class StaleTaskError(RuntimeError):
    """The task this client worked on is over, for example after a missed deadline."""


class UnreachableError(RuntimeError):
    """The coordinator could not be reached before the connect timeout."""


def open_channel(config: ClientConfig) -> grpc.Channel:
    """Open a channel to ``config.coordinator``, over mutual TLS unless insecure."""
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if config.tls.insecure:
        logger.warning(
            "connecting WITHOUT TLS to %s; use only for tests", config.coordinator
        )
        return grpc.insecure_channel(config.coordinator, options=options)
    credentials = tls.channel_credentials(*config.tls.files())
    return grpc.secure_channel(config.coordinator, credentials, options=options)


class CoordinatorClient:
    """Typed calls to the coordinator for one domain, retried while transient.

    Transient failures (UNAVAILABLE, DEADLINE_EXCEEDED) are retried with jittered
    exponential backoff until ``config.connect_timeout_s`` has passed since the
    first failure; any other status raises RejectedError at once.
    """

    def __init__(self, config: ClientConfig, channel: grpc.Channel) -> None:
        self._config = config
        self._stub = pb_grpc.CoordinatorStub(channel)
        self.run_id = ""

    @property
    def domain(self) -> str:
        """The domain this client acts for."""
        return self._config.domain

    def _call(self, what: str, function: Callable[[], T]) -> T:
        first_failure: float | None = None
        delay = 0.5
        while True:
            try:
                return function()
            except grpc.RpcError as error:
                code = error.code()  # type: ignore[attr-defined]
                detail = error.details()  # type: ignore[attr-defined]
                if code == grpc.StatusCode.FAILED_PRECONDITION and what.startswith(
                    ("Download", "Upload", "SecAgg")
                ):
                    raise StaleTaskError(f"{what}: {detail}") from None
                if (
                    code == grpc.StatusCode.UNAVAILABLE
                    and "handshake" in str(detail).lower()
                ):
                    raise RejectedError(
                        f"{what}: the TLS handshake with {self._config.coordinator} "
                        f"failed ({detail}); check that tls.ca is the federation's CA"
                    ) from None
                if code not in _TRANSIENT:
                    raise RejectedError(
                        f"{what} failed: {code.name}: {detail}"
                    ) from None
                now = time.monotonic()
                first_failure = first_failure or now
                if now - first_failure > self._config.connect_timeout_s:
                    raise UnreachableError(
                        f"{what}: coordinator {self._config.coordinator} unreachable "
                        f"for {self._config.connect_timeout_s:g} s ({code.name}: "
                        f"{detail}); check the address and that it is running, and "
                        "that tls.cert was issued by the federation's CA, because "
                        "the coordinator closes connections from other CAs"
                    ) from None
                sleep = delay * random.uniform(0.5, 1.5)
                logger.info("%s: %s, retrying in %.1f s", what, code.name, sleep)
                time.sleep(sleep)
                delay = min(delay * 2, 10.0)

    def join(self, stats: pb.DomainStats, protocol_version: int) -> pb.JoinResponse:
        request = pb.JoinRequest(
            domain=self._config.domain, protocol_version=protocol_version, stats=stats
        )
        response = self._call(
            "Join",
            lambda: self._stub.Join(request, timeout=self._config.rpc_timeout_s),
        )
        self.run_id = response.run_id
        return response

    def next_task(self) -> pb.GetTaskResponse:
        request = pb.GetTaskRequest(domain=self._config.domain, run_id=self.run_id)
        return self._call(
            "GetTask",
            lambda: self._stub.GetTask(request, timeout=self._config.rpc_timeout_s),
        )

    def download(self, task_id: str) -> dict[str, np.ndarray]:
        request = pb.DownloadRequest(
            domain=self._config.domain, run_id=self.run_id, task_id=task_id
        )

        def fetch() -> dict[str, np.ndarray]:
            stream = self._stub.Download(request, timeout=self._config.rpc_timeout_s)
            return assemble_tensor_chunks(stream)

        return self._call(f"Download {task_id}", fetch)

    def upload(self, task_id: str, vector: np.ndarray) -> None:
        """Upload a float64 vector in the clear; a duplicate of an accepted
        upload is success."""
        payload = np.ascontiguousarray(vector, dtype="<f8").tobytes()
        self.upload_payload(task_id, payload, PLAIN_ENCODING)

    def upload_payload(self, task_id: str, payload: bytes, encoding: str) -> None:
        """Upload encoded bytes in chunks; a duplicate of an accepted upload is
        success."""
        pieces = split_payload(payload)
        header = pb.UploadHeader(
            domain=self._config.domain,
            run_id=self.run_id,
            task_id=task_id,
            encoding=encoding,
            total_bytes=len(payload),
            count=len(pieces),
            sha256=hashlib.sha256(payload).digest(),
        )

        def messages() -> Iterator[pb.UploadChunk]:
            yield pb.UploadChunk(header=header)
            for piece in pieces:
                yield pb.UploadChunk(data=piece)

        def send() -> None:
            try:
                self._stub.Upload(messages(), timeout=self._config.rpc_timeout_s)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
                    raise
                logger.info("task=%s upload was already accepted", task_id)

        self._call(f"Upload {task_id}", send)

    def report(self, model: str, rounds: list[pb.RoundMetrics], final: bool) -> None:
        request = pb.ReportMetricsRequest(
            domain=self._config.domain,
            run_id=self.run_id,
            model=model,
            rounds=rounds,
            final=final,
        )
        self._call(
            "ReportMetrics",
            lambda: self._stub.ReportMetrics(
                request, timeout=self._config.rpc_timeout_s
            ),
        )

    # Secure aggregation

    def advertise_keys(self, task_id: str, advertisement: pb.KeyAdvertisement) -> None:
        request = pb.AdvertiseKeysRequest(
            domain=self._config.domain,
            run_id=self.run_id,
            task_id=task_id,
            advertisement=advertisement,
        )
        self._send_once(
            f"SecAgg AdvertiseKeys {task_id}", self._stub.AdvertiseKeys, request
        )

    def share_keys(self, task_id: str, shares: list[pb.EncryptedShare]) -> None:
        request = pb.ShareKeysRequest(
            domain=self._config.domain,
            run_id=self.run_id,
            task_id=task_id,
            shares=shares,
        )
        self._send_once(f"SecAgg ShareKeys {task_id}", self._stub.ShareKeys, request)

    def consistency_check(self, task_id: str, signature: bytes) -> None:
        request = pb.ConsistencyCheckRequest(
            domain=self._config.domain,
            run_id=self.run_id,
            task_id=task_id,
            signature=signature,
        )
        self._send_once(
            f"SecAgg ConsistencyCheck {task_id}", self._stub.ConsistencyCheck, request
        )

    def unmask(
        self,
        task_id: str,
        self_mask_shares: list[pb.RevealedShare],
        mask_key_shares: list[pb.RevealedShare],
    ) -> None:
        request = pb.UnmaskRequest(
            domain=self._config.domain,
            run_id=self.run_id,
            task_id=task_id,
            self_mask_shares=self_mask_shares,
            mask_key_shares=mask_key_shares,
        )
        self._send_once(f"SecAgg Unmask {task_id}", self._stub.Unmask, request)

    def secagg_stage(
        self, task_id: str, stage: pb.SecAggStage
    ) -> pb.GetSecAggStageResponse:
        """Wait until an aggregation stage starts and return its inputs.

        Raises
        ------
        StaleTaskError
            When the task or its aggregation ended before the stage started.
        """
        request = pb.GetSecAggStageRequest(
            domain=self._config.domain, run_id=self.run_id, task_id=task_id, stage=stage
        )
        name = pb.SecAggStage.Name(stage)
        while True:
            response = self._call(
                f"SecAgg GetSecAggStage {name} {task_id}",
                lambda: self._stub.GetSecAggStage(
                    request, timeout=self._config.rpc_timeout_s
                ),
            )
            if response.ready:
                return response

    def _send_once(
        self, what: str, method: Callable[..., object], request: object
    ) -> None:
        """Call ``method``, treating ALREADY_EXISTS as success, because a retry
        after a lost response repeats a request the coordinator applied."""

        def send() -> None:
            try:
                method(request, timeout=self._config.rpc_timeout_s)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
                    raise
                logger.info("%s was already accepted", what)

        self._call(what, send)
