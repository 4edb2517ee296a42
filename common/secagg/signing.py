"""Identity signatures over the public keys a client advertises each round."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.secagg.keys import (
    X25519_KEY_SIZE,
    check_bytes,
    check_name,
    encode_fields,
    round_salt,
)

_ADVERTISEMENT_LABEL = b"fedcdr/v1/advertisement"


class SignatureError(ValueError):
    """A key advertisement, its certificate or its signature failed verification."""


# Key advertisements


def advertisement_bytes(
    run_id: str,
    round_index: int,
    domain: str,
    encryption_public: bytes,
    mask_public: bytes,
) -> bytes:
    """Encode the two X25519 public keys that a domain advertises for a round.

    ``encryption_public`` agrees the share encryption keys and ``mask_public``
    the pairwise mask secrets. The result is the message that
    :func:`sign_advertisement` signs.
    """
    return encode_fields(
        _ADVERTISEMENT_LABEL,
        round_salt(run_id, round_index),
        check_name(domain, "domain").encode(),
        check_bytes(encryption_public, "encryption_public", X25519_KEY_SIZE),
        check_bytes(mask_public, "mask_public", X25519_KEY_SIZE),
    )


def sign_advertisement(
    identity_key: ec.EllipticCurvePrivateKey, message: bytes
) -> bytes:
    """Sign an advertisement with the domain's TLS key (ECDSA P-256, SHA-256).

    Returns the DER-encoded signature.

    Raises
    ------
    TypeError
        When ``identity_key`` is not a P-256 private key or ``message`` is not bytes.
    """
    if not isinstance(identity_key, ec.EllipticCurvePrivateKey) or not isinstance(
        identity_key.curve, ec.SECP256R1
    ):
        raise TypeError(
            "identity_key must be an ECDSA P-256 private key, "
            f"got {type(identity_key).__name__}"
        )
    check_bytes(message, "message")
    return identity_key.sign(message, ec.ECDSA(hashes.SHA256()))


def verify_advertisement(
    certificate_pem: bytes,
    ca_pem: bytes,
    expected_domain: str,
    message: bytes,
    signature: bytes,
    *,
    now: datetime.datetime | None = None,
) -> None:
    """Verify that ``expected_domain`` signed ``message``, or raise.

    The certificate must be signed directly by the CA and valid at ``now``
    (default: the current time). It must be a leaf client certificate whose key
    usage allows digital signatures, with the subject CN ``expected_domain``.
    The signature must then verify with the certificate's P-256 public key.

    Raises
    ------
    TypeError
        When an argument has the wrong type or ``now`` has no time zone.
    ValueError
        When ``ca_pem`` is not a PEM certificate.
    SignatureError
        When any of the checks above fails. The function never returns False.
    """
    check_bytes(certificate_pem, "certificate_pem")
    check_bytes(ca_pem, "ca_pem")
    check_name(expected_domain, "expected_domain")
    check_bytes(message, "message")
    check_bytes(signature, "signature")
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    elif not isinstance(now, datetime.datetime) or now.tzinfo is None:
        raise TypeError("now must be a timezone-aware datetime")

    try:
        ca_certificate = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as error:
        raise ValueError(f"ca_pem is not a PEM certificate: {error}") from error
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError as error:
        raise SignatureError(
            f"certificate of domain {expected_domain!r} is not a PEM certificate"
        ) from error

    _check_issuer(certificate, ca_certificate, expected_domain)
    _check_validity(certificate, expected_domain, now)
    _check_usage(certificate, expected_domain)
    _check_common_name(certificate, expected_domain)
    _check_signature(certificate, expected_domain, message, signature)


def _check_issuer(
    certificate: x509.Certificate, ca_certificate: x509.Certificate, domain: str
) -> None:
    try:
        certificate.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature) as error:
        raise SignatureError(
            f"certificate of domain {domain!r} is not signed by the run CA"
        ) from error


def _check_validity(
    certificate: x509.Certificate, domain: str, now: datetime.datetime
) -> None:
    not_before = certificate.not_valid_before_utc
    not_after = certificate.not_valid_after_utc
    if not not_before <= now <= not_after:
        raise SignatureError(
            f"certificate of domain {domain!r} is valid from {not_before.isoformat()} "
            f"to {not_after.isoformat()}, not at {now.isoformat()}"
        )


def _check_usage(certificate: x509.Certificate, domain: str) -> None:
    # Domain certificates from common.certs are client leaves with
    # digitalSignature. These checks keep the CA and the coordinator
    # certificate from standing in for a domain.
    extensions = certificate.extensions
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
        key_usage = extensions.get_extension_for_class(x509.KeyUsage).value
        extended = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as error:
        raise SignatureError(
            f"certificate of domain {domain!r} lacks the {error.oid.dotted_string} "
            "extension of a domain certificate"
        ) from error
    if constraints.ca:
        raise SignatureError(f"certificate of domain {domain!r} is a CA certificate")
    if not key_usage.digital_signature:
        raise SignatureError(
            f"certificate of domain {domain!r} does not allow digital signatures"
        )
    if ExtendedKeyUsageOID.CLIENT_AUTH not in extended:
        raise SignatureError(
            f"certificate of domain {domain!r} is not a client certificate"
        )


def _check_common_name(certificate: x509.Certificate, domain: str) -> None:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    found = [attribute.value for attribute in names]
    if found != [domain]:
        raise SignatureError(
            f"certificate subject CN is {found!r}; expected [{domain!r}]"
        )


def _check_signature(
    certificate: x509.Certificate, domain: str, message: bytes, signature: bytes
) -> None:
    public_key = certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise SignatureError(
            f"certificate of domain {domain!r} does not contain a P-256 public key"
        )
    try:
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as error:
        raise SignatureError(
            f"advertisement signature of domain {domain!r} is invalid"
        ) from error


# Consistency check

_SURVIVORS_LABEL = b"fedcdr/v1/survivors"


def survivors_bytes(run_id: str, round_index: int, survivors: list[str]) -> bytes:
    """Encode the survivor list of a round, in sorted order, for signing.

    Each survivor signs this message in the consistency check, so a
    coordinator that shows different lists to different clients is caught.
    """
    names = sorted(check_name(name, "survivor") for name in survivors)
    return encode_fields(
        _SURVIVORS_LABEL,
        round_salt(run_id, round_index),
        *(name.encode() for name in names),
    )
