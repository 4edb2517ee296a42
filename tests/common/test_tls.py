"""Tests of certificate creation and mutual TLS over a real gRPC server."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from common import tls

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
def cert_set(tmp_path_factory: pytest.TempPathFactory) -> tls.CertificateSet:
    return tls.create_certificates(
        tmp_path_factory.mktemp("run") / "certs", ["books", "office"]
    )


@pytest.fixture(scope="module")
def other_set(tmp_path_factory: pytest.TempPathFactory) -> tls.CertificateSet:
    return tls.create_certificates(
        tmp_path_factory.mktemp("other") / "certs", ["books"]
    )


@pytest.fixture(scope="module")
def tls_port(cert_set: tls.CertificateSet) -> Iterator[int]:
    directory = cert_set.coordinator_dir
    credentials = tls.server_credentials(
        directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    )
    server, port = _start_server(credentials)
    yield port
    server.stop(None)


@pytest.mark.parametrize("domain", ["books", "office"])
def test_mtls_peer_identity_is_domain(
    cert_set: tls.CertificateSet, tls_port: int, domain: str
) -> None:
    credentials = _client_credentials(cert_set.domain_dirs[domain])

    assert _call(tls_port, credentials) == domain


def test_mtls_rejects_client_of_other_ca(
    cert_set: tls.CertificateSet, other_set: tls.CertificateSet, tls_port: int
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
    cert_set: tls.CertificateSet, tls_port: int
) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=cert_set.ca_cert.read_bytes()
    )

    with pytest.raises(grpc.RpcError) as raised:
        _call(tls_port, credentials)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_client_rejects_server_of_other_ca(
    cert_set: tls.CertificateSet, other_set: tls.CertificateSet, tls_port: int
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


def test_create_certificates_layout(cert_set: tls.CertificateSet) -> None:
    expected = [
        "ca/ca.key",
        "ca/ca.pem",
        "coordinator/ca.pem",
        "coordinator/cert.pem",
        "coordinator/key.pem",
        "domains/books/ca.pem",
        "domains/books/cert.pem",
        "domains/books/key.pem",
        "domains/office/ca.pem",
        "domains/office/cert.pem",
        "domains/office/key.pem",
    ]
    found = sorted(
        str(path.relative_to(cert_set.root))
        for path in cert_set.root.rglob("*")
        if path.is_file()
    )

    assert found == expected


@pytest.mark.parametrize(
    "relative",
    ["ca/ca.key", "coordinator/key.pem", "domains/books/key.pem"],
)
def test_create_certificates_key_mode_0600(
    cert_set: tls.CertificateSet, relative: str
) -> None:
    mode = stat.S_IMODE((cert_set.root / relative).stat().st_mode)

    assert mode == 0o600


def test_create_certificates_no_staging_left(cert_set: tls.CertificateSet) -> None:
    leftovers = [p.name for p in cert_set.root.parent.iterdir() if p.name != "certs"]

    assert leftovers == []


@pytest.mark.parametrize(
    ("relative", "name"),
    [
        ("coordinator/cert.pem", "coordinator"),
        ("domains/books/cert.pem", "books"),
        ("domains/office/cert.pem", "office"),
    ],
)
def test_certificate_common_name(
    cert_set: tls.CertificateSet, relative: str, name: str
) -> None:
    pem = (cert_set.root / relative).read_bytes()

    assert tls.certificate_common_name(pem) == name


def test_coordinator_certificate_sans(cert_set: tls.CertificateSet) -> None:
    from cryptography import x509

    pem = (cert_set.coordinator_dir / "cert.pem").read_bytes()
    sans = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )

    assert sans.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1"
    ]


def test_create_certificates_rejects_existing_set(
    cert_set: tls.CertificateSet,
) -> None:
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tls.create_certificates(cert_set.root, ["books"])


def test_create_certificates_overwrite_replaces_set(tmp_path: Path) -> None:
    out_dir = tmp_path / "certs"
    first = tls.create_certificates(out_dir, ["books"])
    old_ca = first.ca_cert.read_bytes()
    (out_dir / "README.txt").write_text("operator notes")

    second = tls.create_certificates(out_dir, ["films"], overwrite=True)

    assert second.ca_cert.read_bytes() != old_ca
    assert not (out_dir / "domains" / "books").exists()
    assert (out_dir / "domains" / "films" / "cert.pem").is_file()
    assert (out_dir / "README.txt").read_text() == "operator notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["certs"]


def test_create_certificates_into_empty_folder(tmp_path: Path) -> None:
    tls.create_certificates(tmp_path, ["books"])

    assert (tmp_path / "domains" / "books" / "key.pem").is_file()


@pytest.mark.parametrize(
    ("domains", "bad"),
    [
        ([""], "''"),
        (["Books"], "'Books'"),
        (["books.shop"], "'books.shop'"),
        (["coordinator"], "'coordinator'"),
        (["books", "books"], "'books'"),
    ],
)
def test_create_certificates_bad_domain(
    tmp_path: Path, domains: list[str], bad: str
) -> None:
    with pytest.raises(ValueError, match=bad):
        tls.create_certificates(tmp_path / "certs", domains)

    assert not (tmp_path / "certs").exists()


def test_add_domain_certificate_connects(
    cert_set: tls.CertificateSet, tls_port: int, tmp_path: Path
) -> None:
    directory = tls.add_domain_certificate(cert_set.root / "ca", tmp_path, "films")

    assert directory == tmp_path / "domains" / "films"
    assert stat.S_IMODE((directory / "key.pem").stat().st_mode) == 0o600
    assert _call(tls_port, _client_credentials(directory)) == "films"


def test_add_domain_certificate_rejects_existing(
    cert_set: tls.CertificateSet,
) -> None:
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tls.add_domain_certificate(cert_set.root / "ca", cert_set.root, "books")


def test_add_domain_certificate_rejects_foreign_key(
    cert_set: tls.CertificateSet, other_set: tls.CertificateSet, tmp_path: Path
) -> None:
    ca_dir = tmp_path / "mixed"
    ca_dir.mkdir()
    (ca_dir / "ca.pem").write_bytes(cert_set.ca_cert.read_bytes())
    (ca_dir / "ca.key").write_bytes(other_set.ca_key.read_bytes())

    with pytest.raises(ValueError, match="does not belong"):
        tls.add_domain_certificate(ca_dir, tmp_path / "out", "films")


def test_read_pem_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tls.cert file not found"):
        tls.read_pem(tmp_path / "cert.pem", "tls.cert")


def test_read_pem_not_pem(tmp_path: Path) -> None:
    path = tmp_path / "cert.pem"
    path.write_bytes(b"not a certificate")

    with pytest.raises(ValueError, match="is not PEM"):
        tls.read_pem(path, "tls.cert")


def test_server_credentials_mismatched_key(cert_set: tls.CertificateSet) -> None:
    directory = cert_set.coordinator_dir

    with pytest.raises(ValueError, match="does not belong"):
        tls.server_credentials(
            directory / "ca.pem",
            directory / "cert.pem",
            cert_set.domain_dirs["books"] / "key.pem",
        )
