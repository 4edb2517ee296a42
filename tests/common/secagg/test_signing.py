"""Identity signatures over advertised keys: verification raises on every failure."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.certs import CertificateSet, create_certificates
from common.secagg.keys import (
    generate_key_pair,
)
from common.secagg.signing import (
    SignatureError,
    advertisement_bytes,
    sign_advertisement,
    verify_advertisement,
)

RUN = "run-1"
ROUND = 3


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    return create_certificates(tmp_path_factory.mktemp("secagg") / "certs", ["a", "b"])


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    return create_certificates(tmp_path_factory.mktemp("other") / "certs", ["a"])


def _identity_key(domain_dir: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(
        (domain_dir / "key.pem").read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _advertisement() -> bytes:
    _, encryption_public = generate_key_pair()
    _, mask_public = generate_key_pair()
    return advertisement_bytes(RUN, ROUND, "a", encryption_public, mask_public)


def _signed_by(certs: CertificateSet, domain: str) -> tuple[bytes, bytes, bytes]:
    message = _advertisement()
    signature = sign_advertisement(_identity_key(certs.domain_dirs[domain]), message)
    certificate = (certs.domain_dirs[domain] / "cert.pem").read_bytes()
    return certificate, message, signature


def test_verify_advertisement_ok(certs: CertificateSet) -> None:
    certificate, message, signature = _signed_by(certs, "a")

    verify_advertisement(
        certificate, certs.ca_cert.read_bytes(), "a", message, signature
    )


def test_verify_advertisement_wrong_domain(certs: CertificateSet) -> None:
    certificate, message, signature = _signed_by(certs, "a")

    with pytest.raises(SignatureError, match="CN"):
        verify_advertisement(
            certificate, certs.ca_cert.read_bytes(), "b", message, signature
        )


def test_verify_advertisement_other_ca(
    certs: CertificateSet, other_certs: CertificateSet
) -> None:
    certificate, message, signature = _signed_by(other_certs, "a")

    with pytest.raises(SignatureError, match="not signed by the run CA"):
        verify_advertisement(
            certificate, certs.ca_cert.read_bytes(), "a", message, signature
        )


def test_verify_advertisement_tampered_message(certs: CertificateSet) -> None:
    certificate, message, signature = _signed_by(certs, "a")
    tampered = message[:-1] + bytes([message[-1] ^ 0x01])

    with pytest.raises(SignatureError, match="signature .* is invalid"):
        verify_advertisement(
            certificate, certs.ca_cert.read_bytes(), "a", tampered, signature
        )


def test_verify_advertisement_other_key(certs: CertificateSet) -> None:
    certificate, message, _ = _signed_by(certs, "a")
    signature = sign_advertisement(_identity_key(certs.domain_dirs["b"]), message)

    with pytest.raises(SignatureError, match="signature .* is invalid"):
        verify_advertisement(
            certificate, certs.ca_cert.read_bytes(), "a", message, signature
        )


def test_verify_advertisement_garbage_signature(certs: CertificateSet) -> None:
    certificate, message, _ = _signed_by(certs, "a")

    with pytest.raises(SignatureError, match="signature .* is invalid"):
        verify_advertisement(
            certificate, certs.ca_cert.read_bytes(), "a", message, b"\x30\x00"
        )


@pytest.mark.parametrize("days", [-1, 400])
def test_verify_advertisement_outside_validity(
    certs: CertificateSet, days: int
) -> None:
    certificate, message, signature = _signed_by(certs, "a")
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)

    with pytest.raises(SignatureError, match="is valid from"):
        verify_advertisement(
            certificate,
            certs.ca_cert.read_bytes(),
            "a",
            message,
            signature,
            now=when,
        )


def test_verify_advertisement_coordinator_cert(certs: CertificateSet) -> None:
    message = _advertisement()
    key = _identity_key(certs.coordinator_dir)
    certificate = (certs.coordinator_dir / "cert.pem").read_bytes()

    with pytest.raises(SignatureError, match="not a client certificate"):
        verify_advertisement(
            certificate,
            certs.ca_cert.read_bytes(),
            "coordinator",
            message,
            sign_advertisement(key, message),
        )


def test_verify_advertisement_malformed_cert(certs: CertificateSet) -> None:
    _, message, signature = _signed_by(certs, "a")

    with pytest.raises(SignatureError, match="not a PEM certificate"):
        verify_advertisement(
            b"not a certificate", certs.ca_cert.read_bytes(), "a", message, signature
        )


def test_advertisement_bytes_binds_keys() -> None:
    first = bytes(range(32))
    second = bytes(range(1, 33))

    forward = advertisement_bytes(RUN, ROUND, "a", first, second)
    swapped = advertisement_bytes(RUN, ROUND, "a", second, first)

    assert forward != swapped


def test_advertisement_bytes_rejects_key_length() -> None:
    with pytest.raises(ValueError, match="mask_public must be 32 bytes"):
        advertisement_bytes(RUN, ROUND, "a", bytes(32), bytes(31))


def test_sign_advertisement_rejects_p384() -> None:
    key = ec.generate_private_key(ec.SECP384R1())

    with pytest.raises(TypeError, match="P-256"):
        sign_advertisement(key, b"message")
