"""X25519 agreement, HKDF and share encryption against published vectors."""

from __future__ import annotations


import pytest
from cryptography.hazmat.primitives import serialization

from common.secagg.keys import (
    KeyAgreementError,
    ShareDecryptionError,
    decrypt_share,
    derive_key,
    encode_fields,
    encrypt_share,
    generate_key_pair,
    private_key_bytes,
    private_key_from_bytes,
    share_associated_data,
    share_encryption_key,
    shared_secret,
)

# RFC 7748 section 5.2: X25519(scalar, u-coordinate) test vectors. The second
# u-coordinate has its top bit set, which X25519 must ignore.
X25519_VECTORS = [
    (
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
    ),
    (
        "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
        "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
        "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
    ),
]

# RFC 7748 section 5.2: k and u start at 9, and each step sets
# (k, u) = (X25519(k, u), k). The RFC gives k after 1 and 1,000 steps.
X25519_ITERATED_1 = "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"
X25519_ITERATED_1000 = (
    "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"
)

# RFC 7748 section 6.1: the Diffie-Hellman example.
ALICE_PRIVATE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
BOB_PRIVATE = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
BOB_PUBLIC = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
ALICE_BOB_SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"

# RFC 5869 appendix A, test cases 1 to 3 (HKDF-SHA256): IKM, salt, info, L, OKM.
HKDF_VECTORS = [
    (
        "0b" * 22,
        "000102030405060708090a0b0c",
        "f0f1f2f3f4f5f6f7f8f9",
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        "34007208d5b887185865",
    ),
    (
        bytes(range(0x00, 0x50)).hex(),
        bytes(range(0x60, 0xB0)).hex(),
        bytes(range(0xB0, 0x100)).hex(),
        82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (
        "0b" * 22,
        "",
        "",
        42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        "9d201395faa4b61a96c8",
    ),
]

# u-coordinates of points of order 2 or 4: 0, 1 and p - 1, plus p = 2**255 - 19
# and p + 1, which reduce to 0 and 1. X25519 clamps scalars to multiples of 8, so
# each gives an all-zero shared secret for every private key.
LOW_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    (2**255 - 20).to_bytes(32, "little"),
    (2**255 - 19).to_bytes(32, "little"),
    (2**255 - 18).to_bytes(32, "little"),
]

RUN = "run-1"
ROUND = 3


def _public_of(private_hex: str) -> bytes:
    key = private_key_from_bytes(bytes.fromhex(private_hex))
    return key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


# X25519


@pytest.mark.parametrize(("scalar", "u", "expected"), X25519_VECTORS)
def test_shared_secret_rfc7748_vectors(scalar: str, u: str, expected: str) -> None:
    key = private_key_from_bytes(bytes.fromhex(scalar))

    secret = shared_secret(key, bytes.fromhex(u))

    assert secret.hex() == expected


def test_shared_secret_rfc7748_iterated() -> None:
    k = u = (9).to_bytes(32, "little")
    after_one = b""

    for step in range(1, 1001):
        k, u = shared_secret(private_key_from_bytes(k), u), k
        if step == 1:
            after_one = k

    assert after_one.hex() == X25519_ITERATED_1
    assert k.hex() == X25519_ITERATED_1000


def test_public_keys_rfc7748_example() -> None:
    assert _public_of(ALICE_PRIVATE).hex() == ALICE_PUBLIC
    assert _public_of(BOB_PRIVATE).hex() == BOB_PUBLIC


def test_shared_secret_rfc7748_example() -> None:
    alice = private_key_from_bytes(bytes.fromhex(ALICE_PRIVATE))
    bob = private_key_from_bytes(bytes.fromhex(BOB_PRIVATE))

    alice_view = shared_secret(alice, bytes.fromhex(BOB_PUBLIC))
    bob_view = shared_secret(bob, bytes.fromhex(ALICE_PUBLIC))

    assert alice_view.hex() == ALICE_BOB_SHARED
    assert bob_view.hex() == ALICE_BOB_SHARED


def test_shared_secret_agrees_both_ways() -> None:
    alice, alice_public = generate_key_pair()
    bob, bob_public = generate_key_pair()

    assert shared_secret(alice, bob_public) == shared_secret(bob, alice_public)


def test_generate_key_pair_sizes() -> None:
    key, public = generate_key_pair()

    assert len(public) == 32
    assert len(private_key_bytes(key)) == 32


def test_private_key_bytes_round_trip() -> None:
    key, public = generate_key_pair()

    restored = private_key_from_bytes(private_key_bytes(key))

    assert private_key_bytes(restored) == private_key_bytes(key)
    assert _public_of(private_key_bytes(restored).hex()) == public


@pytest.mark.parametrize("size", [0, 31, 33])
def test_private_key_from_bytes_wrong_length(size: int) -> None:
    with pytest.raises(ValueError, match="must be 32 bytes"):
        private_key_from_bytes(bytes(size))


@pytest.mark.parametrize(
    "point", LOW_ORDER_POINTS, ids=["zero", "one", "p-1", "p", "p+1"]
)
def test_shared_secret_rejects_low_order(point: bytes) -> None:
    key, _ = generate_key_pair()

    with pytest.raises(KeyAgreementError, match="low-order"):
        shared_secret(key, point)


@pytest.mark.parametrize("size", [0, 31, 33, 65])
def test_shared_secret_rejects_wrong_length(size: int) -> None:
    key, _ = generate_key_pair()

    with pytest.raises(KeyAgreementError, match="must be 32 bytes"):
        shared_secret(key, b"\x09" * size)


def test_shared_secret_rejects_str_peer() -> None:
    key, public = generate_key_pair()

    with pytest.raises(TypeError, match="peer_public"):
        shared_secret(key, public.hex())  # type: ignore[arg-type]


# HKDF


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), HKDF_VECTORS)
def test_derive_key_rfc5869_vectors(
    ikm: str, salt: str, info: str, length: int, okm: str
) -> None:
    derived = derive_key(
        bytes.fromhex(ikm),
        salt=bytes.fromhex(salt),
        info=bytes.fromhex(info),
        length=length,
    )

    assert derived.hex() == okm


@pytest.mark.parametrize("length", [0, -1, 255 * 32 + 1])
def test_derive_key_rejects_length(length: int) -> None:
    with pytest.raises(ValueError, match="length must be from 1"):
        derive_key(b"secret", salt=b"", info=b"", length=length)


def test_share_encryption_key_depends_on_round() -> None:
    secret = bytes(range(32))

    key = share_encryption_key(secret, RUN, ROUND)

    assert len(key) == 32
    assert key != share_encryption_key(secret, RUN, ROUND + 1)
    assert key != share_encryption_key(secret, "run-2", ROUND)


@pytest.mark.parametrize("round_index", [-1, 2**64])
def test_share_encryption_key_rejects_round(round_index: int) -> None:
    with pytest.raises(ValueError, match="round_index"):
        share_encryption_key(bytes(32), RUN, round_index)


# Associated data


def test_encode_fields_unambiguous() -> None:
    assert encode_fields(b"ab", b"c") != encode_fields(b"a", b"bc")
    assert encode_fields(b"", b"a") != encode_fields(b"a", b"")
    assert encode_fields(b"a") != encode_fields(b"a", b"")


def test_share_associated_data_unambiguous() -> None:
    split_late = share_associated_data(RUN, ROUND, "ab", "c")
    split_early = share_associated_data(RUN, ROUND, "a", "bc")

    assert split_late != split_early


def test_share_associated_data_direction() -> None:
    forward = share_associated_data(RUN, ROUND, "books", "office")
    backward = share_associated_data(RUN, ROUND, "office", "books")

    assert forward != backward


def test_share_associated_data_round() -> None:
    this_round = share_associated_data(RUN, ROUND, "books", "office")
    next_round = share_associated_data(RUN, ROUND + 1, "books", "office")

    assert this_round != next_round


@pytest.mark.parametrize("sender", ["", None])
def test_share_associated_data_rejects_sender(sender: str | None) -> None:
    with pytest.raises((TypeError, ValueError), match="sender"):
        share_associated_data(RUN, ROUND, sender, "office")  # type: ignore[arg-type]


# Share encryption


@pytest.fixture
def share_key() -> bytes:
    return share_encryption_key(bytes(range(32)), RUN, ROUND)


@pytest.fixture
def associated_data() -> bytes:
    return share_associated_data(RUN, ROUND, "books", "office")


def test_encrypt_share_round_trip(share_key: bytes, associated_data: bytes) -> None:
    plaintext = b"share of the self-mask seed"

    ciphertext = encrypt_share(share_key, plaintext, associated_data)

    assert decrypt_share(share_key, ciphertext, associated_data) == plaintext
    assert len(ciphertext) == 12 + len(plaintext) + 16


def test_encrypt_share_random_nonce(share_key: bytes, associated_data: bytes) -> None:
    first = encrypt_share(share_key, b"share", associated_data)
    second = encrypt_share(share_key, b"share", associated_data)

    assert first != second


@pytest.mark.parametrize("position", [0, 11, 12, -17, -1])
def test_decrypt_share_tampered(
    share_key: bytes, associated_data: bytes, position: int
) -> None:
    ciphertext = bytearray(encrypt_share(share_key, b"share", associated_data))
    ciphertext[position] ^= 0x01

    with pytest.raises(ShareDecryptionError, match="failed authentication"):
        decrypt_share(share_key, bytes(ciphertext), associated_data)


def test_decrypt_share_truncated(share_key: bytes, associated_data: bytes) -> None:
    ciphertext = encrypt_share(share_key, b"", associated_data)

    with pytest.raises(ShareDecryptionError, match="at least 28"):
        decrypt_share(share_key, ciphertext[:-1], associated_data)


def test_decrypt_share_wrong_associated_data(
    share_key: bytes, associated_data: bytes
) -> None:
    ciphertext = encrypt_share(share_key, b"share", associated_data)
    redirected = share_associated_data(RUN, ROUND, "books", "movies")

    with pytest.raises(ShareDecryptionError):
        decrypt_share(share_key, ciphertext, redirected)


def test_decrypt_share_wrong_key(share_key: bytes, associated_data: bytes) -> None:
    ciphertext = encrypt_share(share_key, b"share", associated_data)
    other_key = share_encryption_key(bytes(range(1, 33)), RUN, ROUND)

    with pytest.raises(ShareDecryptionError):
        decrypt_share(other_key, ciphertext, associated_data)


def test_encrypt_share_rejects_short_key(associated_data: bytes) -> None:
    with pytest.raises(ValueError, match="key must be 32 bytes"):
        encrypt_share(bytes(16), b"share", associated_data)
