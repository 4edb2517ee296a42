"""Client certificates the coordinator must reject, over real mutual TLS.

A servicer on 127.0.0.1 port 0 serves with the federation's certificates.
Clients without a certificate, with one from another CA or with an expired
one fail the handshake. A domain's certificate used for another domain, or a
revoked one (from the config or a CRL file that changes while the server
runs), gets PERMISSION_DENIED.
"""

import datetime
import os
from concurrent import futures

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common import tls
from common.certs import create_certificates
from common.config import ConfigError, CoordinatorConfig, TLSConfig
from common.pb import federation_pb2 as pb
from common.pb import federation_pb2_grpc as pb_grpc
from common.runconfig import PROTOCOL_VERSION
from server.federation import Federation
from server.revocation import Revocations
from server.servicer import CoordinatorServicer

STATS = pb.DomainStats(n_users=3, n_items=5, n_interactions=9)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    root = tmp_path_factory.mktemp("revocation")
    return {
        "run": create_certificates(root / "run", ["books", "office"]),
        "other": create_certificates(root / "other", ["books"]),
        "crl": root / "revoked.crl",
    }


@pytest.fixture
def served(certs):
    cert_set = certs["run"]
    coordinator = cert_set.coordinator_dir
    config = CoordinatorConfig(
        run_id="run",
        domains=("books", "office"),
        tls=TLSConfig(
            ca=coordinator / "ca.pem",
            cert=coordinator / "cert.pem",
            key=coordinator / "key.pem",
        ),
    )
    _write_crl(certs, [])
    revocations = Revocations(
        cert_set.ca_cert.read_bytes(), certs["crl"], check_interval_s=0
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_CoordinatorServicer_to_server(
        CoordinatorServicer(Federation(config), revocations=revocations), server
    )
    port = server.add_secure_port(
        "127.0.0.1:0", tls.server_credentials(*config.tls.files())
    )
    server.start()
    yield port, revocations
    server.stop(grace=None)


def _join(port, credentials, domain="books"):
    """Return the status code of a Join as ``domain``; OK when it succeeds."""
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        try:
            pb_grpc.CoordinatorStub(channel).Join(
                pb.JoinRequest(
                    domain=domain, protocol_version=PROTOCOL_VERSION, stats=STATS
                ),
                timeout=10,
            )
        except grpc.RpcError as error:
            return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def _domain_credentials(cert_set, domain):
    folder = cert_set.domain_dirs[domain]
    return tls.channel_credentials(
        folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    )


def _serial(cert_set, domain):
    pem = (cert_set.domain_dirs[domain] / "cert.pem").read_bytes()
    return x509.load_pem_x509_certificate(pem).serial_number


def _ca(cert_set):
    ca_cert = x509.load_pem_x509_certificate(cert_set.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(
        cert_set.ca_key.read_bytes(), password=None
    )
    return ca_cert, ca_key


def _write_crl(certs, serials, cert_set=None):
    ca_cert, ca_key = _ca(cert_set or certs["run"])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=1))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now)
            .build()
        )
    path = certs["crl"]
    path.write_bytes(
        builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    # A rewrite within the file system's timestamp resolution keeps the
    # modification time, so move it forward explicitly.
    stamp = path.stat().st_mtime_ns + len(serials) * 1_000_000_000 + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def _expired_credentials(cert_set, tmp_path):
    ca_cert, ca_key = _ca(cert_set)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "books")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=10))
        .not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return grpc.ssl_channel_credentials(
        root_certificates=cert_set.ca_cert.read_bytes(),
        private_key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        certificate_chain=cert.public_bytes(serialization.Encoding.PEM),
    )


def test_domain_certificate_is_accepted(served, certs):
    port, _ = served

    code, _ = _join(port, _domain_credentials(certs["run"], "books"))

    assert code == grpc.StatusCode.OK


def test_client_without_certificate_is_rejected(served, certs):
    port, _ = served
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs["run"].ca_cert.read_bytes()
    )

    code, _ = _join(port, credentials)

    assert code == grpc.StatusCode.UNAVAILABLE


def test_certificate_of_other_ca_is_rejected(served, certs):
    port, _ = served
    folder = certs["other"].domain_dirs["books"]
    credentials = tls.channel_credentials(
        certs["run"].ca_cert, folder / "cert.pem", folder / "key.pem"
    )

    code, _ = _join(port, credentials)

    assert code == grpc.StatusCode.UNAVAILABLE


def test_expired_certificate_is_rejected(served, certs, tmp_path):
    port, _ = served

    code, _ = _join(port, _expired_credentials(certs["run"], tmp_path))

    assert code == grpc.StatusCode.UNAVAILABLE


def test_certificate_of_other_domain_is_rejected(served, certs):
    port, _ = served

    code, details = _join(port, _domain_credentials(certs["run"], "books"), "office")

    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "certificate is for domain 'books'" in details


def test_crl_revocation_applies_without_restart(served, certs):
    port, _ = served
    books = _domain_credentials(certs["run"], "books")
    before, _ = _join(port, books)

    _write_crl(certs, [_serial(certs["run"], "books")])
    after, details = _join(port, books)
    office, _ = _join(port, _domain_credentials(certs["run"], "office"), "office")

    assert before == grpc.StatusCode.OK
    assert after == grpc.StatusCode.PERMISSION_DENIED
    assert "is revoked" in details
    assert office == grpc.StatusCode.OK


def test_config_serial_revocation_applies_on_reload(served, certs):
    port, revocations = served
    office = _domain_credentials(certs["run"], "office")
    serial = f"{_serial(certs['run'], 'office'):x}"

    revocations.reload([serial])
    code, details = _join(port, office, "office")

    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert f"serial {serial}" in details


def test_crl_of_other_ca_is_rejected_at_start(certs, tmp_path):
    certs = {**certs, "crl": tmp_path / "other.crl"}
    _write_crl(certs, [1], cert_set=certs["other"])

    with pytest.raises(ConfigError, match="is not signed by the federation's CA"):
        Revocations(certs["run"].ca_cert.read_bytes(), certs["crl"])


def test_invalid_crl_keeps_last_valid_one(served, certs):
    port, _ = served
    books = _domain_credentials(certs["run"], "books")
    _write_crl(certs, [_serial(certs["run"], "books")])
    revoked, _ = _join(port, books)

    certs["crl"].write_bytes(b"not a CRL")
    still_revoked, _ = _join(port, books)

    assert revoked == grpc.StatusCode.PERMISSION_DENIED
    assert still_revoked == grpc.StatusCode.PERMISSION_DENIED
