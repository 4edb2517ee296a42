"""Key agreement, key derivation, share encryption and key advertisements."""

from __future__ import annotations

import datetime
import hmac
import os

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

X25519_KEY_SIZE = 32
SHARE_KEY_SIZE = 32
GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16
# HKDF-Expand produces at most 255 blocks of the hash output (RFC 5869).
MAX_DERIVED_LENGTH = 255 * 32
MAX_ROUND_INDEX = 2**64 - 1

SHARE_ENCRYPTION_INFO = b"fedcdr/v1/share-encryption"
_SHARE_AD_LABEL = b"fedcdr/v1/share"
_ADVERTISEMENT_LABEL = b"fedcdr/v1/advertisement"
_LOW_ORDER_MESSAGE = (
    "invalid peer public key: a low-order point gives an all-zero shared secret, "
    "so reject the peer's advertisement"
)


class KeyAgreementError(ValueError):
    """An X25519 peer public key is malformed or of low order."""


class ShareDecryptionError(ValueError):
    """A share ciphertext failed authentication or is malformed."""


class SignatureError(ValueError):
    """A key advertisement, its certificate or its signature failed verification."""


# Encoding


def encode_fields(*fields: bytes) -> bytes:
    """Encode byte strings so that distinct sequences give distinct encodings.

    Each field is a 4-byte big-endian length followed by its bytes, so
    ``("ab", "c")`` and ``("a", "bc")`` encode differently.

    Raises
    ------
    TypeError
        When a field is not ``bytes``.
    ValueError
        When a field is 2**32 bytes or longer.
    """
    parts = []
    for index, field in enumerate(fields):
        if not isinstance(field, bytes):
            raise TypeError(f"field {index} must be bytes, got {type(field).__name__}")
        if len(field) >= 2**32:
            raise ValueError(
                f"field {index} is {len(field)} bytes; the maximum is 2**32 - 1"
            )
        parts.append(len(field).to_bytes(4, "big"))
        parts.append(field)
    return b"".join(parts)


def round_salt(run_id: str, round_index: int) -> bytes:
    """Encode the run and round as the HKDF salt of every key of that round.

    Raises
    ------
    TypeError, ValueError
        When ``run_id`` is not a non-empty string or ``round_index`` is not an
        integer from 0 to 2**64 - 1.
    """
    _check_name(run_id, "run_id")
    if isinstance(round_index, bool) or not isinstance(round_index, int):
        raise TypeError(f"round_index must be an int, got {type(round_index).__name__}")
    if not 0 <= round_index <= MAX_ROUND_INDEX:
        raise ValueError(f"round_index must be from 0 to 2**64 - 1, got {round_index}")
    return encode_fields(run_id.encode(), round_index.to_bytes(8, "big"))


def _check_name(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _check_bytes(value: object, name: str, size: int | None = None) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise ValueError(f"{name} must be {size} bytes, got {len(value)}")
    return value


# X25519


def generate_key_pair() -> tuple[X25519PrivateKey, bytes]:
    """Generate an X25519 key pair and return it with the raw 32-byte public key."""
    private_key = X25519PrivateKey.generate()
    public = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return private_key, public


def private_key_bytes(key: X25519PrivateKey) -> bytes:
    """Return the raw 32-byte private scalar of ``key``, as RFC 7748 encodes it."""
    if not isinstance(key, X25519PrivateKey):
        raise TypeError(f"key must be an X25519PrivateKey, got {type(key).__name__}")
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def private_key_from_bytes(raw: bytes) -> X25519PrivateKey:
    """Load an X25519 private key from its raw 32 bytes.

    The scalar is clamped during scalar multiplication (RFC 7748 section 5), so
    any 32 bytes are a valid key.

    Raises
    ------
    TypeError
        When ``raw`` is not ``bytes``.
    ValueError
        When ``raw`` is not 32 bytes long.
    """
    _check_bytes(raw, "raw", X25519_KEY_SIZE)
    return X25519PrivateKey.from_private_bytes(raw)


def shared_secret(private_key: X25519PrivateKey, peer_public: bytes) -> bytes:
    """Compute the raw 32-byte X25519 shared secret with a peer's public key.

    The output is not uniformly random: pass it through :func:`derive_key`
    before using it as a key.

    Raises
    ------
    TypeError
        When ``private_key`` is not an X25519 key or ``peer_public`` is not bytes.
    KeyAgreementError
        When ``peer_public`` is not 32 bytes, or is a low-order point whose
        shared secret is all zeros (RFC 7748 section 6.1).
    """
    if not isinstance(private_key, X25519PrivateKey):
        raise TypeError(
            f"private_key must be an X25519PrivateKey, got {type(private_key).__name__}"
        )
    if not isinstance(peer_public, bytes):
        raise TypeError(f"peer_public must be bytes, got {type(peer_public).__name__}")
    if len(peer_public) != X25519_KEY_SIZE:
        raise KeyAgreementError(
            f"peer public key must be {X25519_KEY_SIZE} bytes, got {len(peer_public)}"
        )

    # cryptography 50 raises ValueError when the result is all zeros. The
    # explicit check below keeps the rule for a backend that returns the zeros.
    try:
        secret = private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as error:
        raise KeyAgreementError(_LOW_ORDER_MESSAGE) from error
    if hmac.compare_digest(secret, bytes(X25519_KEY_SIZE)):
        raise KeyAgreementError(_LOW_ORDER_MESSAGE)
    return secret


# HKDF


def derive_key(secret: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """Derive ``length`` bytes from ``secret`` with HKDF-SHA256 (RFC 5869).

    An empty ``salt`` is the same as the RFC's default of 32 zero bytes.

    Raises
    ------
    TypeError
        When an argument has the wrong type.
    ValueError
        When ``length`` is not from 1 to 8160 (255 SHA-256 blocks).
    """
    _check_bytes(secret, "secret")
    _check_bytes(salt, "salt")
    _check_bytes(info, "info")
    if isinstance(length, bool) or not isinstance(length, int):
        raise TypeError(f"length must be an int, got {type(length).__name__}")
    if not 1 <= length <= MAX_DERIVED_LENGTH:
        raise ValueError(
            f"length must be from 1 to {MAX_DERIVED_LENGTH} bytes, got {length}"
        )
    kdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info)
    return kdf.derive(secret)


def share_encryption_key(secret: bytes, run_id: str, round_index: int) -> bytes:
    """Derive the 32-byte AES-256-GCM key that two clients use for their shares."""
    return derive_key(
        secret,
        salt=round_salt(run_id, round_index),
        info=SHARE_ENCRYPTION_INFO,
        length=SHARE_KEY_SIZE,
    )


# Share encryption


def share_associated_data(
    run_id: str, round_index: int, sender: str, receiver: str
) -> bytes:
    """Encode the run, round, sender and receiver that a share ciphertext binds.

    A ciphertext then decrypts only for the round and the direction it was made
    for, so the coordinator cannot replay or redirect it.
    """
    return encode_fields(
        _SHARE_AD_LABEL,
        round_salt(run_id, round_index),
        _check_name(sender, "sender").encode(),
        _check_name(receiver, "receiver").encode(),
    )


def encrypt_share(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Encrypt a share with AES-256-GCM and return ``nonce || ciphertext || tag``.

    The 12-byte nonce is random. Each key encrypts only the shares of one pair
    of clients in one round, so a repeated nonce, which would break GCM, is
    negligibly likely.

    Raises
    ------
    TypeError
        When an argument is not ``bytes``.
    ValueError
        When ``key`` is not 32 bytes.
    """
    _check_bytes(key, "key", SHARE_KEY_SIZE)
    _check_bytes(plaintext, "plaintext")
    _check_bytes(associated_data, "associated_data")
    nonce = os.urandom(GCM_NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def decrypt_share(key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """Decrypt the output of :func:`encrypt_share` and return the share.

    Raises
    ------
    TypeError
        When an argument is not ``bytes``.
    ValueError
        When ``key`` is not 32 bytes.
    ShareDecryptionError
        When the ciphertext is too short, was modified, or was made with
        another key or associated data.
    """
    _check_bytes(key, "key", SHARE_KEY_SIZE)
    _check_bytes(ciphertext, "ciphertext")
    _check_bytes(associated_data, "associated_data")
    if len(ciphertext) < GCM_NONCE_SIZE + GCM_TAG_SIZE:
        raise ShareDecryptionError(
            f"share ciphertext is {len(ciphertext)} bytes; at least "
            f"{GCM_NONCE_SIZE + GCM_TAG_SIZE} are needed for the nonce and tag"
        )
    nonce = ciphertext[:GCM_NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, ciphertext[GCM_NONCE_SIZE:], associated_data)
    except InvalidTag as error:
        raise ShareDecryptionError(
            "share ciphertext failed authentication: it was modified, or the key "
            "or associated data differ from the sender's"
        ) from error


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
        _check_name(domain, "domain").encode(),
        _check_bytes(encryption_public, "encryption_public", X25519_KEY_SIZE),
        _check_bytes(mask_public, "mask_public", X25519_KEY_SIZE),
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
    _check_bytes(message, "message")
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
    _check_bytes(certificate_pem, "certificate_pem")
    _check_bytes(ca_pem, "ca_pem")
    _check_name(expected_domain, "expected_domain")
    _check_bytes(message, "message")
    _check_bytes(signature, "signature")
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
