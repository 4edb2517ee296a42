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
                    ("Download", "Upload")
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
        """Upload a float64 vector; a duplicate of an accepted upload is success."""
        payload = np.ascontiguousarray(vector, dtype="<f8").tobytes()
        pieces = split_payload(payload)
        header = pb.UploadHeader(
            domain=self._config.domain,
            run_id=self.run_id,
            task_id=task_id,
            encoding=PLAIN_ENCODING,
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
