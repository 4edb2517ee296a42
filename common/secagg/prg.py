"""Mask keys and the AES-128-CTR keystream that masks uint32 model updates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from common.secagg.keys import derive_key, encode_fields, round_salt

MASK_KEY_SIZE = 16
MIN_SECRET_SIZE = 16
DEFAULT_CHUNK_WORDS = 65536
# A fused pass keeps one keystream chunk and one accumulator chunk of 256 KiB
# each in cache. Measured here with 8 masks over 4M words, 65536 words was the
# fastest of 4096 to 65536 (bench/secagg_mask.py).
FUSED_CHUNK_WORDS = 65536
PURPOSES = ("pairwise", "self")

_MASK_LABEL = b"fedcdr/v1/mask"
_WORD_SIZE = 4
_AES_BLOCK_SIZE = 16
# CTR mode starts from the all-zero counter block, and cryptography increments
# it as a 128-bit big-endian integer.
_INITIAL_COUNTER = bytes(_AES_BLOCK_SIZE)


def mask_key(
    secret: bytes,
    *,
    run_id: str,
    round_index: int,
    purpose: str,
    pair: tuple[str, str] | None,
    tensor: str,
) -> bytes:
    """Derive the 16-byte AES-128 key that masks one tensor in one round.

    HKDF-SHA256 takes the run and round as salt, and the purpose, the pair of
    domains in sorted order and the tensor name as info. Both members of a
    pair therefore derive the same key from their X25519 shared secret, in
    either order of ``pair``.

    Parameters
    ----------
    secret
        The X25519 shared secret of the pair for ``"pairwise"``, or the
        client's own seed for ``"self"``. At least 16 bytes.
    run_id, round_index
        The run and round that the mask belongs to.
    purpose
        ``"pairwise"`` (requires ``pair``) or ``"self"`` (requires ``pair=None``).
    pair
        The two distinct domain names of a pairwise mask.
    tensor
        Name of the masked tensor, so that no two tensors share a keystream.

    Raises
    ------
    TypeError
        When an argument has the wrong type.
    ValueError
        On a short secret, an unknown purpose, or a pair that does not match
        the purpose or repeats one name.
    """
    if not isinstance(secret, bytes):
        raise TypeError(f"secret must be bytes, got {type(secret).__name__}")
    if len(secret) < MIN_SECRET_SIZE:
        raise ValueError(
            f"secret must be at least {MIN_SECRET_SIZE} bytes, got {len(secret)}"
        )
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    if not isinstance(tensor, str) or not tensor:
        raise ValueError(f"tensor must be a non-empty string, got {tensor!r}")

    info = encode_fields(
        _MASK_LABEL,
        purpose.encode(),
        *_pair_fields(purpose, pair),
        tensor.encode(),
    )
    return derive_key(
        secret,
        salt=round_salt(run_id, round_index),
        info=info,
        length=MASK_KEY_SIZE,
    )


def _pair_fields(purpose: str, pair: tuple[str, str] | None) -> list[bytes]:
    if purpose == "self":
        if pair is not None:
            raise ValueError(f"a self mask takes pair=None, got {pair!r}")
        return []
    if pair is None:
        raise ValueError("a pairwise mask needs pair=(domain, peer_domain)")
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise TypeError(f"pair must be a tuple of two domain names, got {pair!r}")
    for name in pair:
        if not isinstance(name, str) or not name:
            raise ValueError(f"pair names must be non-empty strings, got {pair!r}")
    if pair[0] == pair[1]:
        raise ValueError(f"pair must name two different domains, got {pair!r}")
    return [name.encode() for name in sorted(pair)]


def add_mask(
    buffer: np.ndarray,
    key: bytes,
    sign: int = 1,
    chunk_words: int = DEFAULT_CHUNK_WORDS,
) -> None:
    """Add or subtract the keystream of ``key`` to ``buffer`` in place, mod 2**32.

    The keystream is AES-128-CTR from the all-zero counter block, read as
    little-endian uint32 words, so word ``i`` of the stream masks
    ``buffer[i]``. It is generated ``chunk_words`` words at a time, so the
    extra memory is about ``8 * chunk_words`` bytes for any buffer size.

    NOTE: a key must mask only one buffer. Two buffers masked with the same
    key reveal their difference to anyone who receives both.

    Parameters
    ----------
    buffer
        C-contiguous, writeable 1-D ``np.uint32`` array (N,), changed in place.
    key
        16-byte AES-128 key from :func:`mask_key`.
    sign
        ``1`` adds the keystream and ``-1`` subtracts it.
    chunk_words
        Keystream words generated per step, at least 1. The result does not
        depend on it.

    Raises
    ------
    TypeError
        When ``buffer`` is not a C-contiguous 1-D uint32 array, or ``key`` is not
        bytes.
    ValueError
        When ``buffer`` is read-only, ``key`` is not 16 bytes, ``sign`` is not
        1 or -1, or ``chunk_words`` is below 1.
    """
    _check_buffer(buffer)
    _check_key(key)
    if isinstance(sign, bool) or sign not in (1, -1):
        raise ValueError(f"sign must be 1 or -1, got {sign!r}")
    if isinstance(chunk_words, bool) or not isinstance(chunk_words, int):
        raise TypeError(f"chunk_words must be an int, got {type(chunk_words).__name__}")
    if chunk_words < 1:
        raise ValueError(f"chunk_words must be at least 1, got {chunk_words}")

    encryptor = Cipher(algorithms.AES(key), modes.CTR(_INITIAL_COUNTER)).encryptor()
    chunk_words = min(chunk_words, max(buffer.size, 1))
    zeros = memoryview(bytes(chunk_words * _WORD_SIZE))
    # Room for block_size - 1 bytes past the output, which update_into may require.
    keystream_bytes = bytearray(chunk_words * _WORD_SIZE + _AES_BLOCK_SIZE - 1)
    # One uint32 view of the keystream, made once, so each step costs only
    # the encryption and the addition.
    keystream = np.frombuffer(keystream_bytes, dtype="<u4", count=chunk_words)
    combine = np.add if sign == 1 else np.subtract
    full_stop = buffer.size - buffer.size % chunk_words

    for start in range(0, full_stop, chunk_words):
        # Encrypting zeros in CTR mode outputs the keystream itself.
        encryptor.update_into(zeros, keystream_bytes)

        # uint32 arithmetic in NumPy wraps, which is the reduction mod 2**32.
        window = buffer[start : start + chunk_words]
        combine(window, keystream, out=window)

    # The last, shorter chunk continues the same keystream.
    count = buffer.size - full_stop
    if count:
        encryptor.update_into(zeros[: count * _WORD_SIZE], keystream_bytes)
        window = buffer[full_stop:]
        combine(window, keystream[:count], out=window)


def add_masks(
    buffer: np.ndarray,
    masks: Sequence[tuple[bytes, int]],
    chunk_words: int = FUSED_CHUNK_WORDS,
) -> None:
    """Add or subtract several keystreams to ``buffer`` in one pass, mod 2**32.

    The result equals calling :func:`add_mask` once per ``(key, sign)``. For
    each chunk of the buffer, the keystreams are first summed into a
    cache-sized accumulator and the accumulator is then added to the buffer,
    so the buffer is read and written once instead of once per mask.

    Raises
    ------
    TypeError, ValueError
        As :func:`add_mask`, for the buffer, any key, any sign or the chunk size.
    """
    _check_buffer(buffer)
    for key, sign in masks:
        _check_key(key)
        if isinstance(sign, bool) or sign not in (1, -1):
            raise ValueError(f"sign must be 1 or -1, got {sign!r}")
    if isinstance(chunk_words, bool) or not isinstance(chunk_words, int):
        raise TypeError(f"chunk_words must be an int, got {type(chunk_words).__name__}")
    if chunk_words < 1:
        raise ValueError(f"chunk_words must be at least 1, got {chunk_words}")
    if not masks or buffer.size == 0:
        return

    streams = [
        (Cipher(algorithms.AES(key), modes.CTR(_INITIAL_COUNTER)).encryptor(), sign)
        for key, sign in masks
    ]
    chunk_words = min(chunk_words, buffer.size)
    zeros = memoryview(bytes(chunk_words * _WORD_SIZE))
    # Room for block_size - 1 bytes past each output, which update_into may require.
    keystream_bytes = bytearray(chunk_words * _WORD_SIZE + _AES_BLOCK_SIZE - 1)
    keystream = np.frombuffer(keystream_bytes, dtype="<u4", count=chunk_words)
    total_bytes = bytearray(chunk_words * _WORD_SIZE + _AES_BLOCK_SIZE - 1)
    total_words = np.frombuffer(total_bytes, dtype="<u4", count=chunk_words)

    for start in range(0, buffer.size, chunk_words):
        count = min(chunk_words, buffer.size - start)
        total = total_words[:count]

        # The first keystream is written straight into the accumulator.
        first, first_sign = streams[0]
        first.update_into(zeros[: count * _WORD_SIZE], total_bytes)
        if first_sign == -1:
            np.negative(total, out=total)
        for encryptor, sign in streams[1:]:
            encryptor.update_into(zeros[: count * _WORD_SIZE], keystream_bytes)
            combine = np.add if sign == 1 else np.subtract
            combine(total, keystream[:count], out=total)

        window = buffer[start : start + count]
        np.add(window, total, out=window)


def mask_words(key: bytes, n: int) -> np.ndarray:
    """Return the first ``n`` keystream words of ``key`` as a uint32 array (n,)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be at least 0, got {n}")
    words = np.zeros(n, dtype=np.uint32)
    add_mask(words, key)
    return words


def _check_buffer(buffer: object) -> None:
    if not isinstance(buffer, np.ndarray):
        raise TypeError(f"buffer must be a numpy array, got {type(buffer).__name__}")
    if buffer.dtype != np.uint32:
        raise TypeError(f"buffer must have dtype uint32, got {buffer.dtype}")
    if buffer.ndim != 1:
        raise TypeError(f"buffer must be 1-D, got shape {buffer.shape}")
    if not buffer.flags.c_contiguous:
        raise TypeError("buffer must be C-contiguous; pass np.ascontiguousarray(...)")
    if not buffer.flags.writeable:
        raise ValueError("buffer is read-only; pass a writeable copy")


def _check_key(key: object) -> None:
    if not isinstance(key, bytes):
        raise TypeError(f"key must be bytes, got {type(key).__name__}")
    if len(key) != MASK_KEY_SIZE:
        raise ValueError(f"key must be {MASK_KEY_SIZE} bytes, got {len(key)}")
