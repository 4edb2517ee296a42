"""gRPC servicer of the coordinator: validate each request, delegate, map errors."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Iterator
from typing import NoReturn

import grpc

from common import tls
from common.pb import federation_pb2 as pb
from common.pb import federation_pb2_grpc as pb_grpc
from common.runconfig import (
    PROTOCOL_VERSION,
    privacy_config_to_proto,
    run_config_to_proto,
    secagg_config_to_proto,
)
from common.tensors import MAX_PAYLOAD_BYTES, tensor_chunks
from server.errors import (
    DuplicateError,
    InvalidRequestError,
    PermissionDeniedError,
    ProtocolError,
    WrongStageError,
)
from server.federation import Federation
from server.revocation import Revocations

logger = logging.getLogger(__name__)

_STATUS = {
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    WrongStageError: grpc.StatusCode.FAILED_PRECONDITION,
    DuplicateError: grpc.StatusCode.ALREADY_EXISTS,
}


def abort_with(context: grpc.ServicerContext, error: ProtocolError) -> NoReturn:
    """End the RPC with the status code that matches ``error``'s class."""
    code = _STATUS.get(type(error), grpc.StatusCode.FAILED_PRECONDITION)
    logger.warning("rejected request: %s: %s", code.name, error)
    context.abort(code, str(error))
    raise AssertionError("context.abort returned")  # pragma: no cover


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    """Serves one run's :class:`Federation` to its domain clients.

    Parameters
    ----------
    federation
        The run state.
    insecure
        True when the server has no TLS; the domain named in a request is then
        trusted as it is. Only tests and explicit local runs use this.
    revocations
        Revoked client certificates; every request's certificate is checked.
    """

    def __init__(
        self,
        federation: Federation,
        insecure: bool = False,
        revocations: Revocations | None = None,
    ) -> None:
        self._federation = federation
        self._revocations = revocations
        self._metrics = federation.metrics
        self._insecure = insecure
        # One upload stream per domain at a time, so a stalled stream of one
        # domain cannot take every worker thread.
        self._uploading: set[str] = set()
        self._uploading_lock = threading.Lock()

    def _reject(self, context: grpc.ServicerContext, error: ProtocolError) -> NoReturn:
        """Count the rejection by status code, then end the RPC with it."""
        code = _STATUS.get(type(error), grpc.StatusCode.FAILED_PRECONDITION)
        self._metrics.rejected.labels(code.name).inc()
        abort_with(context, error)

    def _caller(self, context: grpc.ServicerContext, domain: str) -> str:
        """Return the domain the caller proves to be, checking the request's claim."""
        if not domain:
            raise InvalidRequestError("domain is empty; set it to your domain name")
        if self._insecure:
            return domain
        identity = tls.peer_identity(context)
        if identity is None:
            raise PermissionDeniedError("a client certificate is required")
        if identity != domain:
            raise PermissionDeniedError(
                f"the client certificate is for domain {identity!r}, "
                f"but the request names {domain!r}"
            )
        certificate = tls.peer_certificate(context)
        if self._revocations is not None and certificate is not None:
            serial = self._revocations.revoked_serial(certificate)
            if serial is not None:
                raise PermissionDeniedError(
                    f"the client certificate of domain {identity!r} with serial "
                    f"{serial:x} is revoked; ask the coordinator's operator for a "
                    "new certificate"
                )
        return identity

    def _check_run(self, run_id: str) -> None:
        if run_id != self._federation.config.run_id:
            raise InvalidRequestError(
                f"run_id {run_id!r} does not match this coordinator's run "
                f"{self._federation.config.run_id!r}; join again"
            )

    def Join(
        self, request: pb.JoinRequest, context: grpc.ServicerContext
    ) -> pb.JoinResponse:
        try:
            domain = self._caller(context, request.domain)
            if request.protocol_version != PROTOCOL_VERSION:
                raise InvalidRequestError(
                    f"protocol_version {request.protocol_version} is not supported; "
                    f"this coordinator speaks version {PROTOCOL_VERSION}"
                )
            if request.stats.n_items <= 0 or request.stats.n_users <= 0:
                raise InvalidRequestError(
                    "stats.n_users and stats.n_items must be positive, got "
                    f"{request.stats.n_users} and {request.stats.n_items}"
                )
            self._federation.join(domain, request.stats)
        except ProtocolError as error:
            self._reject(context, error)
        config = self._federation.config
        return pb.JoinResponse(
            run_id=config.run_id,
            config=run_config_to_proto(config.model, config.train),
            secagg=secagg_config_to_proto(config.secagg),
            dp=privacy_config_to_proto(
                config.dp, self._federation.privacy.aggregate_noise_multiplier
            ),
        )

    def GetTask(
        self, request: pb.GetTaskRequest, context: grpc.ServicerContext
    ) -> pb.GetTaskResponse:
        try:
            domain = self._caller(context, request.domain)
            self._check_run(request.run_id)
            return self._federation.next_task(domain)
        except ProtocolError as error:
            self._reject(context, error)

    def Download(
        self, request: pb.DownloadRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TensorChunk]:
        try:
            domain = self._caller(context, request.domain)
            self._check_run(request.run_id)
            manifest, payload = self._federation.download(domain, request.task_id)
        except ProtocolError as error:
            self._reject(context, error)
        logger.debug(
            "download task=%s domain=%s bytes=%d", request.task_id, domain, len(payload)
        )
        yield from tensor_chunks(manifest, payload)
        self._metrics.sent_bytes.labels("Download").inc(len(payload))

    def Upload(
        self, request_iterator: Iterator[pb.UploadChunk], context: grpc.ServicerContext
    ) -> pb.UploadResponse:
        try:
            header = _read_upload_header(request_iterator)
            domain = self._caller(context, header.domain)
            self._check_run(header.run_id)
            expected = self._federation.expected_upload_bytes(domain, header.task_id)
            if header.total_bytes != expected:
                raise InvalidRequestError(
                    f"upload header declares {header.total_bytes} bytes, but task "
                    f"{header.task_id} takes {expected} bytes"
                )
            with self._upload_slot(domain):
                payload = _read_upload_data(request_iterator, header)
                self._federation.upload(
                    domain, header.task_id, header.encoding, payload
                )
        except _ResourceExhaustedError as error:
            logger.warning("rejected request: RESOURCE_EXHAUSTED: %s", error)
            self._metrics.rejected.labels("RESOURCE_EXHAUSTED").inc()
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        except ProtocolError as error:
            self._reject(context, error)
        self._metrics.received_bytes.labels("Upload").inc(len(payload))
        return pb.UploadResponse(received_bytes=len(payload))

    @contextlib.contextmanager
    def _upload_slot(self, domain: str) -> Iterator[None]:
        with self._uploading_lock:
            if domain in self._uploading:
                raise _ResourceExhaustedError(
                    f"domain {domain!r} already has an upload in progress; send "
                    "one upload at a time"
                )
            self._uploading.add(domain)
        try:
            yield
        finally:
            with self._uploading_lock:
                self._uploading.discard(domain)

    def AdvertiseKeys(
        self, request: pb.AdvertiseKeysRequest, context: grpc.ServicerContext
    ) -> pb.AdvertiseKeysResponse:
        try:
            domain = self._caller(context, request.domain)
            self._check_run(request.run_id)
            self._check_certificate(context, request.advertisement.certificate_pem)
            self._federation.advertise_keys(
                domain, request.task_id, request.advertisement
            )
        except ProtocolError as error:
            self._reject(context, error)
        return pb.AdvertiseKeysResponse()

    def ShareKeys(
        self, request: pb.ShareKeysRequest, context: grpc.ServicerContext
    ) -> pb.ShareKeysResponse:
        try:
            domain = self._caller(context, request.domain)
            self._check_run(request.run_id)
            self._federation.share_keys(domain, request.task_id, list(request.shares))
        except ProtocolError as error:
            self._reject(context, error)
        return pb.ShareKeysResponse()

    def ConsistencyCheck(
        self, request: pb.ConsistencyCheckRequest, context: grpc.ServicerContext
    ) -> pb.ConsistencyCheckResponse:
        try:
            domain = self._caller(context, request.domain)
            self._check_run(request.run_id)
            self._federation.consistency_check(
                domain, request.task_id, request.signature
            )
        except ProtocolError as error:
            self._reject(context, error)
        return pb.ConsistencyCheckResponse()

    def Unmask(
        self, request: pb.UnmaskRequest, context: grpc.ServicerContext
    ) -> pb.UnmaskResponse:
        try:
            domain = self._caller(context, request.domain)
            self._check_run(request.run_id)
            self._federation.unmask(
                domain,
                request.task_id,
                list(request.self_mask_shares),
                list(request.mask_key_shares),
            )
        except ProtocolError as error:
            self._reject(context, error)
        return pb.UnmaskResponse()

    def GetSecAggStage(
        self, request: pb.GetSecAggStageRequest, context: grpc.ServicerContext
    ) -> pb.GetSecAggStageResponse:
        try:
            domain = self._caller(context, request.domain)
            self._check_run(request.run_id)
            return self._federation.secagg_stage(domain, request.task_id, request.stage)
        except ProtocolError as error:
            self._reject(context, error)

    def _check_certificate(
        self, context: grpc.ServicerContext, certificate_pem: bytes
    ) -> None:
        """Require an advertised certificate to be the one the caller connected with."""
        if self._insecure:
            return
        presented = tls.peer_certificate(context)
        if presented is None or presented.strip() != certificate_pem.strip():
            raise PermissionDeniedError(
                "the advertised certificate is not the client certificate of this "
                "connection; advertise the certificate in tls.cert"
            )

    def ReportMetrics(
        self, request: pb.ReportMetricsRequest, context: grpc.ServicerContext
    ) -> pb.ReportMetricsResponse:
        try:
            domain = self._caller(context, request.domain)
            self._check_run(request.run_id)
            self._federation.report(domain, request)
        except ProtocolError as error:
            self._reject(context, error)
        return pb.ReportMetricsResponse()


class _ResourceExhaustedError(Exception):
    """A request exceeds a size or concurrency limit (RESOURCE_EXHAUSTED)."""

    pass


def _read_upload_header(chunks: Iterator[pb.UploadChunk]) -> pb.UploadHeader:
    """Read the first message of an upload stream, which must be its header."""
    first = next(chunks, None)
    if first is None or first.WhichOneof("content") != "header":
        raise InvalidRequestError("an upload stream must start with its header")
    header = first.header
    if header.total_bytes > MAX_PAYLOAD_BYTES:
        raise _ResourceExhaustedError(
            f"upload of {header.total_bytes} bytes exceeds the limit of "
            f"{MAX_PAYLOAD_BYTES} bytes"
        )
    # Every data chunk carries at least one byte, so the count is bounded too.
    max_count = max(1, header.total_bytes)
    if not 1 <= header.count <= max_count:
        raise InvalidRequestError(
            f"upload header declares {header.count} chunks, but {header.total_bytes} bytes "
            f"take 1 to {max_count} non-empty chunks"
        )
    return header


def _read_upload_data(
    chunks: Iterator[pb.UploadChunk], header: pb.UploadHeader
) -> bytes:
    """Read the ``header.count`` data chunks that follow an upload's header."""
    parts = []
    size = 0
    for index, chunk in enumerate(chunks):
        if chunk.WhichOneof("content") != "data":
            raise InvalidRequestError(f"message {index + 1} of the upload is not data")
        if index >= header.count:
            raise InvalidRequestError(
                f"upload sent more than the {header.count} chunks its header declares"
            )
        if not chunk.data and header.total_bytes:
            raise InvalidRequestError(f"data chunk {index} of the upload is empty")
        size += len(chunk.data)
        if size > header.total_bytes:
            raise InvalidRequestError(
                f"upload sent more than the {header.total_bytes} bytes its header declares"
            )
        parts.append(chunk.data)
    if len(parts) != header.count:
        raise InvalidRequestError(
            f"upload sent {len(parts)} data chunks, but its header declares {header.count}"
        )
    payload = b"".join(parts)
    if len(payload) != header.total_bytes:
        raise InvalidRequestError(
            f"upload sent {len(payload)} bytes, but its header declares {header.total_bytes}"
        )
    if hashlib.sha256(payload).digest() != header.sha256:
        raise InvalidRequestError("upload SHA-256 does not match its header")
    return payload
