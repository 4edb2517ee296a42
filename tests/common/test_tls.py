"""Tests of mutual TLS over a real gRPC server and of reading PEM files."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from common import tls
from common.certs import CertificateSet, add_domain_certificate

WHOAMI = "/fedcdr.test.Identity/WhoAmI"


def _whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
    identity = tls.peer_identity(context)
    return b"<none>" if identity is None else identity.encode("utf-8")


def _start_server(
    credentials: grpc.ServerCredentials | None,
) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "fedcdr.test.Identity",
        {"WhoAmI": grpc.unary_unary_rpc_method_handler(_whoami)},
    )
    server.add_generic_rpc_handlers((handler,))
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def _call(port: int, credentials: grpc.ChannelCredentials | None) -> str:
    target = f"127.0.0.1:{port}"
    if credentials is None:
        channel = grpc.insecure_channel(target)
    else:
        channel = grpc.secure_channel(target, credentials)
    with channel:
        reply = channel.unary_unary(WHOAMI)(b"", timeout=10)
    return reply.decode("utf-8")


def _client_credentials(directory: Path) -> grpc.ChannelCredentials:
    return tls.channel_credentials(
        directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    )


@pytest.fixture(scope="module")
def tls_port(cert_set: CertificateSet) -> Iterator[int]:
    directory = cert_set.coordinator_dir
    credentials = tls.server_credentials(
        directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    )
    server, port = _start_server(credentials)
    yield port
    server.stop(None)


@pytest.mark.parametrize("domain", ["books", "office"])
def test_mtls_peer_identity_is_domain(
    cert_set: CertificateSet, tls_port: int, domain: str
) -> None:
    credentials = _client_credentials(cert_set.domain_dirs[domain])

    assert _call(tls_port, credentials) == domain


def test_mtls_rejects_client_of_other_ca(
    cert_set: CertificateSet, other_set: CertificateSet, tls_port: int
) -> None:
    # The client trusts the right CA but presents a certificate of another CA.
    foreign = other_set.domain_dirs["books"]
    credentials = tls.channel_credentials(
        cert_set.ca_cert, foreign / "cert.pem", foreign / "key.pem"
    )

    with pytest.raises(grpc.RpcError) as raised:
        _call(tls_port, credentials)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_rejects_client_without_certificate(
    cert_set: CertificateSet, tls_port: int
) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=cert_set.ca_cert.read_bytes()
    )

    with pytest.raises(grpc.RpcError) as raised:
        _call(tls_port, credentials)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_client_rejects_server_of_other_ca(
    cert_set: CertificateSet, other_set: CertificateSet, tls_port: int
) -> None:
    directory = other_set.domain_dirs["books"]
    credentials = _client_credentials(directory)

    with pytest.raises(grpc.RpcError) as raised:
        _call(tls_port, credentials)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_peer_identity_none_without_tls() -> None:
    server, port = _start_server(None)
    try:
        assert _call(port, None) == "<none>"
    finally:
        server.stop(None)


@pytest.mark.parametrize(
    ("relative", "name"),
    [
        ("coordinator/cert.pem", "coordinator"),
        ("domains/books/cert.pem", "books"),
        ("domains/office/cert.pem", "office"),
    ],
)
def test_certificate_common_name(
    cert_set: CertificateSet, relative: str, name: str
) -> None:
    pem = (cert_set.root / relative).read_bytes()

    assert tls.certificate_common_name(pem) == name


def test_add_domain_certificate_connects(
    cert_set: CertificateSet, tls_port: int, tmp_path: Path
) -> None:
    directory = add_domain_certificate(cert_set.root / "ca", tmp_path, "films")

    assert directory == tmp_path / "domains" / "films"
    assert stat.S_IMODE((directory / "key.pem").stat().st_mode) == 0o600
    assert _call(tls_port, _client_credentials(directory)) == "films"


def test_read_pem_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tls.cert file not found"):
        tls.read_pem(tmp_path / "cert.pem", "tls.cert")


def test_read_pem_not_pem(tmp_path: Path) -> None:
    path = tmp_path / "cert.pem"
    path.write_bytes(b"not a certificate")

    with pytest.raises(ValueError, match="is not PEM"):
        tls.read_pem(path, "tls.cert")


def test_server_credentials_mismatched_key(cert_set: CertificateSet) -> None:
    directory = cert_set.coordinator_dir

    with pytest.raises(ValueError, match="does not belong"):
        tls.server_credentials(
            directory / "ca.pem",
            directory / "cert.pem",
            cert_set.domain_dirs["books"] / "key.pem",
        )


def test_server_credentials_reject_client_certificate(cert_set):
    domain = cert_set.domain_dirs["books"]

    with pytest.raises(ValueError, match="not valid for TLS server authentication"):
        tls.server_credentials(
            domain / "ca.pem", domain / "cert.pem", domain / "key.pem"
        )


def test_channel_credentials_reject_server_certificate(cert_set):
    coordinator = cert_set.coordinator_dir

    with pytest.raises(ValueError, match="not valid for TLS client authentication"):
        tls.channel_credentials(
            coordinator / "ca.pem", coordinator / "cert.pem", coordinator / "key.pem"
        )
