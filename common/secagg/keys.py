"""Key agreement, key derivation and share encryption for secure aggregation."""

from __future__ import annotations

import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

X25519_KEY_SIZE = 32
SHARE_KEY_SIZE = 32
GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16
# HKDF-Expand produces at most 255 blocks of the hash output (RFC 5869).
MAX_DERIVED_LENGTH = 255 * 32
MAX_ROUND_INDEX = 2**64 - 1

SHARE_ENCRYPTION_INFO = b"fedcdr/v1/share-encryption"
_SHARE_AD_LABEL = b"fedcdr/v1/share"
_LOW_ORDER_MESSAGE = (
    "invalid peer public key: a low-order point gives an all-zero shared secret, "
    "so reject the peer's advertisement"
)


class KeyAgreementError(ValueError):
    """An X25519 peer public key is malformed or of low order."""


class ShareDecryptionError(ValueError):
    """A share ciphertext failed authentication or is malformed."""


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
    check_name(run_id, "run_id")
    if isinstance(round_index, bool) or not isinstance(round_index, int):
        raise TypeError(f"round_index must be an int, got {type(round_index).__name__}")
    if not 0 <= round_index <= MAX_ROUND_INDEX:
        raise ValueError(f"round_index must be from 0 to 2**64 - 1, got {round_index}")
    return encode_fields(run_id.encode(), round_index.to_bytes(8, "big"))


def check_name(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def check_bytes(value: object, name: str, size: int | None = None) -> bytes:
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
    check_bytes(raw, "raw", X25519_KEY_SIZE)
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
    check_bytes(secret, "secret")
    check_bytes(salt, "salt")
    check_bytes(info, "info")
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
        check_name(sender, "sender").encode(),
        check_name(receiver, "receiver").encode(),
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
    check_bytes(key, "key", SHARE_KEY_SIZE)
    check_bytes(plaintext, "plaintext")
    check_bytes(associated_data, "associated_data")
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
    check_bytes(key, "key", SHARE_KEY_SIZE)
    check_bytes(ciphertext, "ciphertext")
    check_bytes(associated_data, "associated_data")
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
