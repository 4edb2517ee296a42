"""t-of-n Shamir secret sharing of 32-byte secrets over the prime field GF(2**256 + 297).

A secret s is the constant term of a random polynomial f of degree threshold - 1,
and the share of id x is f(x). Any ``threshold`` shares determine f(0) = s by
Lagrange interpolation, while fewer shares leave s uniformly distributed over the
field, so they reveal nothing about it (Shamir, "How to share a secret", 1979).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from random import Random

# The smallest prime above 2**256, so every 32-byte secret read big-endian is a
# field element and the field adds only 297 values that no secret maps to.
PRIME = 2**256 + 297
SECRET_BYTES = 32
# PRIME needs 257 bits, so a share value takes 33 bytes.
SHARE_BYTES = 33
MAX_SHARE_ID = 2**16

_SYSTEM_RANDOM = secrets.SystemRandom()


class ShareError(ValueError):
    """A share value is malformed, or the shares do not interpolate to a secret.

    The second case means that at least one share is wrong or was tampered with,
    although a wrong share usually yields a wrong secret that fits in 32 bytes,
    which this check cannot detect.
    """


def split_secret(
    secret: bytes,
    threshold: int,
    share_ids: Sequence[int],
    rng: Random = _SYSTEM_RANDOM,
) -> dict[int, bytes]:
    """Split ``secret`` into one share per id, any ``threshold`` of which rebuild it.

    Parameters
    ----------
    secret
        Exactly 32 bytes, read as a big-endian integer.
    threshold
        Number of shares needed to rebuild the secret, 1 <= threshold <=
        len(share_ids). A threshold of 1 makes every share equal to the secret.
    share_ids
        Distinct evaluation points in 1..2**16. The id 0 is invalid because f(0)
        is the secret itself.
    rng
        Source of the random polynomial coefficients. Keep the default, a CSPRNG
        over ``os.urandom``, everywhere except deterministic tests.

    Returns
    -------
    dict[int, bytes]
        Share id to its 33-byte big-endian value f(id), which is below PRIME.

    Raises
    ------
    TypeError
        If ``secret`` is not bytes or an id or the threshold is not an int.
    ValueError
        If the secret length, the threshold or an id is invalid.
    """
    value = _secret_to_int(secret)
    ids = _check_ids(share_ids)
    _check_threshold(threshold)
    if threshold > len(ids):
        raise ValueError(
            f"threshold must be at most the number of share ids ({len(ids)}), "
            f"got {threshold}"
        )

    # f(x) = value + c_1 x + ... + c_{t-1} x^{t-1}, with uniform coefficients.
    # A zero leading coefficient is allowed, because excluding it would let t-1
    # shares rule out one candidate secret.
    coefficients = [value] + [rng.randrange(PRIME) for _ in range(threshold - 1)]

    shares = {}
    for share_id in ids:
        shares[share_id] = _evaluate(coefficients, share_id).to_bytes(
            SHARE_BYTES, "big"
        )
    return shares


def combine_shares(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """Rebuild a secret from ``threshold`` of its shares.

    If more shares are given, the ``threshold`` smallest ids are used and the
    rest are ignored, so an inconsistent extra share goes unnoticed.

    Returns
    -------
    bytes
        The 32-byte secret.

    Raises
    ------
    ValueError
        If the threshold is invalid, an id is outside 1..2**16, or fewer than
        ``threshold`` shares are given.
    ShareError
        If a share value is not 33 bytes or is not below PRIME, or if the
        interpolated value does not fit in 32 bytes, which means a wrong share.
    """
    ids = _select_ids(shares, threshold)
    coefficients = lagrange_coefficients_at_zero(ids)
    return _interpolate(shares, ids, coefficients)


def combine_many(
    share_maps: Sequence[Mapping[int, bytes]], threshold: int
) -> list[bytes]:
    """Rebuild several secrets, like :func:`combine_shares` applied to each map.

    The Lagrange coefficients are computed once per distinct set of selected ids,
    so a batch whose secrets all come from the same clients costs one
    coefficient computation plus ``threshold`` multiplications per secret.

    Raises
    ------
    ValueError, ShareError
        As :func:`combine_shares`, for the first map that fails. The message
        gives that map's index in ``share_maps``.
    """
    cache: dict[tuple[int, ...], list[int]] = {}
    secrets_out = []
    for index, shares in enumerate(share_maps):
        try:
            ids = _select_ids(shares, threshold)
            if ids not in cache:
                cache[ids] = lagrange_coefficients_at_zero(ids)
            secrets_out.append(_interpolate(shares, ids, cache[ids]))
        except ValueError as error:
            raise type(error)(f"share map {index}: {error}") from error
    return secrets_out


def lagrange_coefficients_at_zero(ids: Sequence[int]) -> list[int]:
    """Compute the Lagrange basis values l_i(0) mod PRIME for distinct ``ids``.

    l_i(0) = prod_{j != i} x_j / (x_j - x_i), so f(0) = sum_i f(x_i) l_i(0) for
    every polynomial f of degree below len(ids). The ids must be distinct and
    nonzero mod PRIME, which the callers in this module ensure.
    """
    coefficients = []
    for i, x_i in enumerate(ids):
        numerator = 1
        denominator = 1
        for j, x_j in enumerate(ids):
            if j != i:
                numerator = numerator * x_j % PRIME
                denominator = denominator * (x_j - x_i) % PRIME
        coefficients.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return coefficients


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    """Evaluate the polynomial with ``coefficients`` (constant term first) at x."""
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * x + coefficient) % PRIME
    return result


def _interpolate(
    shares: Mapping[int, bytes], ids: tuple[int, ...], coefficients: Sequence[int]
) -> bytes:
    """Compute f(0) from the shares at ``ids`` and check that it is a secret."""
    total = 0
    for share_id, coefficient in zip(ids, coefficients, strict=True):
        value = _share_to_int(share_id, shares[share_id])
        total = (total + value * coefficient) % PRIME
    if total >= 2 ** (8 * SECRET_BYTES):
        raise ShareError(
            f"the shares at ids {list(ids)} interpolate to a value that does not "
            "fit in 32 bytes, so at least one of them is wrong or was tampered with"
        )
    return total.to_bytes(SECRET_BYTES, "big")


def _select_ids(shares: Mapping[int, bytes], threshold: int) -> tuple[int, ...]:
    """Check the ids and the threshold and return the threshold smallest ids."""
    _check_threshold(threshold)
    if len(shares) < threshold:
        raise ValueError(
            f"rebuilding a secret needs {threshold} shares (the threshold), "
            f"got {len(shares)}"
        )
    ids = _check_ids(list(shares))
    return tuple(sorted(ids)[:threshold])


def _check_threshold(threshold: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise TypeError(f"threshold must be an int, got {type(threshold).__name__}")
    if threshold < 1:
        raise ValueError(f"threshold must be at least 1, got {threshold}")


def _check_ids(share_ids: Sequence[int]) -> list[int]:
    """Check that the ids are distinct ints in 1..MAX_SHARE_ID."""
    ids = list(share_ids)
    for share_id in ids:
        if isinstance(share_id, bool) or not isinstance(share_id, int):
            raise TypeError(f"share ids must be ints, got {type(share_id).__name__}")
        if not 1 <= share_id <= MAX_SHARE_ID:
            raise ValueError(
                f"share ids must be in 1..{MAX_SHARE_ID} (0 would be the secret "
                f"itself), got {share_id}"
            )
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"share ids must be distinct, got duplicates {duplicates}")
    return ids


def _secret_to_int(secret: bytes) -> int:
    if not isinstance(secret, (bytes, bytearray)):
        raise TypeError(f"secret must be bytes, got {type(secret).__name__}")
    if len(secret) != SECRET_BYTES:
        raise ValueError(
            f"secret must be exactly {SECRET_BYTES} bytes, got {len(secret)}"
        )
    return int.from_bytes(secret, "big")


def _share_to_int(share_id: int, value: bytes) -> int:
    if not isinstance(value, (bytes, bytearray)):
        raise ShareError(f"share {share_id} must be bytes, got {type(value).__name__}")
    if len(value) != SHARE_BYTES:
        raise ShareError(
            f"share {share_id} must be {SHARE_BYTES} bytes, got {len(value)}"
        )
    number = int.from_bytes(value, "big")
    if number >= PRIME:
        raise ShareError(
            f"share {share_id} is not below the field prime 2**256 + 297, so it "
            "is malformed"
        )
    return number
