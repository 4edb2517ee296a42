"""Tests of mask key derivation and the AES-128-CTR mask stream."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from common.secagg.keys import generate_key_pair, shared_secret
from common.secagg.prg import add_mask, add_masks, mask_key, mask_words

GOLDEN_KEY = bytes(range(16))
# First 8 keystream words of GOLDEN_KEY, computed once with add_mask and
# checked against AES-CTR and AES-ECB in the tests below. The first 4 words are
# AES-128(000102...0f, zero block) = c6a13b37 878f5b82 6f4f8162 a1c8d879 read
# as little-endian words.
GOLDEN_WORDS = [
    0x373BA1C6,
    0x825B8F87,
    0x62814F6F,
    0x79D8C8A1,
    0x95134673,
    0x1EB4C095,
    0xE3BD7B49,
    0x0A2DF465,
]

RUN = "run-1"
ROUND = 3
SECRET = bytes(range(32))


def _pairwise_key(
    pair: tuple[str, str] = ("books", "office"),
    *,
    run_id: str = RUN,
    round_index: int = ROUND,
    tensor: str = "encoder.weight",
) -> bytes:
    return mask_key(
        SECRET,
        run_id=run_id,
        round_index=round_index,
        purpose="pairwise",
        pair=pair,
        tensor=tensor,
    )


def _ramp(n: int) -> np.ndarray:
    # Deterministic words that cover the full uint32 range.
    return (np.arange(n, dtype=np.uint64) * 2654435761 % 2**32).astype(np.uint32)


# Golden vectors


def test_mask_words_golden() -> None:
    words = mask_words(GOLDEN_KEY, 8)

    assert words.tolist() == GOLDEN_WORDS


def test_mask_words_match_aes_ctr() -> None:
    encryptor = Cipher(algorithms.AES(GOLDEN_KEY), modes.CTR(bytes(16))).encryptor()
    keystream = encryptor.update(bytes(4 * 1000)) + encryptor.finalize()
    expected = np.frombuffer(keystream, dtype="<u4")

    words = mask_words(GOLDEN_KEY, 1000)

    assert words.tolist() == expected.tolist()
    assert expected[:8].tolist() == GOLDEN_WORDS


def test_mask_words_match_aes_ecb_counter() -> None:
    # Block i of the stream is AES(key, i) with i as a 128-bit big-endian integer.
    counters = b"".join(i.to_bytes(16, "big") for i in range(4))
    encryptor = Cipher(algorithms.AES(GOLDEN_KEY), modes.ECB()).encryptor()
    expected = np.frombuffer(encryptor.update(counters), dtype="<u4")

    words = mask_words(GOLDEN_KEY, 16)

    assert words.tolist() == expected.tolist()


def test_mask_words_empty() -> None:
    words = mask_words(GOLDEN_KEY, 0)

    assert words.shape == (0,)
    assert words.dtype == np.uint32


# add_mask


@pytest.mark.parametrize("chunk_words", [1, 7, 65536])
def test_add_mask_chunking_invariant(chunk_words: int) -> None:
    n = 100_003
    reference = _ramp(n)
    add_mask(reference, GOLDEN_KEY, chunk_words=65536)
    buffer = _ramp(n)

    add_mask(buffer, GOLDEN_KEY, chunk_words=chunk_words)

    assert np.array_equal(buffer, reference)


def test_add_mask_is_addition_mod_2_32() -> None:
    n = 1000
    buffer = _ramp(n)
    expected = (_ramp(n).astype(np.uint64) + mask_words(GOLDEN_KEY, n)) % 2**32

    add_mask(buffer, GOLDEN_KEY)

    assert buffer.tolist() == expected.tolist()


def test_add_mask_subtract_restores() -> None:
    plain = _ramp(10_001)
    buffer = plain.copy()

    add_mask(buffer, GOLDEN_KEY, sign=1, chunk_words=333)
    masked = buffer.copy()
    add_mask(buffer, GOLDEN_KEY, sign=-1, chunk_words=4096)

    assert not np.array_equal(masked, plain)
    assert np.array_equal(buffer, plain)


def test_add_mask_rejects_dtype() -> None:
    with pytest.raises(TypeError, match="dtype uint32"):
        add_mask(np.zeros(8, dtype=np.int32), GOLDEN_KEY)


def test_add_mask_rejects_big_endian() -> None:
    with pytest.raises(TypeError, match="dtype uint32"):
        add_mask(np.zeros(8, dtype=">u4"), GOLDEN_KEY)


def test_add_mask_rejects_non_contiguous() -> None:
    buffer = np.zeros(16, dtype=np.uint32)[::2]

    with pytest.raises(TypeError, match="C-contiguous"):
        add_mask(buffer, GOLDEN_KEY)


def test_add_mask_rejects_2d() -> None:
    with pytest.raises(TypeError, match="1-D"):
        add_mask(np.zeros((2, 4), dtype=np.uint32), GOLDEN_KEY)


def test_add_mask_rejects_list() -> None:
    with pytest.raises(TypeError, match="numpy array"):
        add_mask([0, 1, 2], GOLDEN_KEY)  # type: ignore[arg-type]


def test_add_mask_rejects_read_only() -> None:
    buffer = np.zeros(8, dtype=np.uint32)
    buffer.flags.writeable = False

    with pytest.raises(ValueError, match="read-only"):
        add_mask(buffer, GOLDEN_KEY)


@pytest.mark.parametrize("sign", [0, 2, -2, True])
def test_add_mask_rejects_sign(sign: int) -> None:
    with pytest.raises(ValueError, match="sign must be 1 or -1"):
        add_mask(np.zeros(8, dtype=np.uint32), GOLDEN_KEY, sign=sign)


@pytest.mark.parametrize("size", [0, 15, 17, 32])
def test_add_mask_rejects_key_length(size: int) -> None:
    with pytest.raises(ValueError, match="key must be 16 bytes"):
        add_mask(np.zeros(8, dtype=np.uint32), bytes(size))


def test_add_mask_rejects_chunk_words() -> None:
    with pytest.raises(ValueError, match="chunk_words must be at least 1"):
        add_mask(np.zeros(8, dtype=np.uint32), GOLDEN_KEY, chunk_words=0)


# Pairwise cancellation


@st.composite
def _client_vectors(draw: st.DrawFn) -> np.ndarray:
    n_clients = draw(st.integers(min_value=2, max_value=20))
    length = draw(st.integers(min_value=1, max_value=64))
    return draw(arrays(np.uint32, (n_clients, length)))


@settings(max_examples=30, deadline=None)
@given(plain=_client_vectors())
def test_pairwise_masks_cancel(plain: np.ndarray) -> None:
    n_clients, _ = plain.shape
    names = [f"domain-{index:02d}" for index in range(n_clients)]
    key_pairs = [generate_key_pair() for _ in names]
    masked = plain.copy()

    # Each client derives every pairwise key from its own view of the exchange.
    for u, name in enumerate(names):
        private_key, _ = key_pairs[u]
        for v, peer in enumerate(names):
            if u == v:
                continue
            secret = shared_secret(private_key, key_pairs[v][1])
            key = mask_key(
                secret,
                run_id=RUN,
                round_index=ROUND,
                purpose="pairwise",
                pair=(name, peer),
                tensor="encoder.weight",
            )
            add_mask(masked[u], key, sign=1 if u < v else -1)

    expected = plain.sum(axis=0, dtype=np.uint32)
    total = masked.sum(axis=0, dtype=np.uint32)
    assert np.array_equal(total, expected)


# mask_key


def test_mask_key_size() -> None:
    assert len(_pairwise_key()) == 16


def test_mask_key_symmetric() -> None:
    assert _pairwise_key(("books", "office")) == _pairwise_key(("office", "books"))


def test_mask_key_differs_by_tensor() -> None:
    assert _pairwise_key(tensor="encoder.weight") != _pairwise_key(
        tensor="encoder.bias"
    )


def test_mask_key_differs_by_round() -> None:
    assert _pairwise_key(round_index=ROUND) != _pairwise_key(round_index=ROUND + 1)


def test_mask_key_differs_by_run() -> None:
    assert _pairwise_key(run_id="run-1") != _pairwise_key(run_id="run-2")


def test_mask_key_differs_by_pair() -> None:
    assert _pairwise_key(("books", "office")) != _pairwise_key(("books", "movies"))


def test_mask_key_differs_by_purpose() -> None:
    self_key = mask_key(
        SECRET,
        run_id=RUN,
        round_index=ROUND,
        purpose="self",
        pair=None,
        tensor="encoder.weight",
    )

    assert self_key != _pairwise_key()


@pytest.mark.parametrize(
    ("purpose", "pair", "message"),
    [
        ("self", ("books", "office"), "self mask takes pair=None"),
        ("pairwise", None, "pairwise mask needs pair"),
        ("pairwise", ("books", "books"), "two different domains"),
        ("pairwise", ("books", ""), "non-empty strings"),
        ("shared", None, "purpose must be one of"),
    ],
)
def test_mask_key_rejects_purpose_pair(
    purpose: str, pair: tuple[str, str] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        mask_key(
            SECRET,
            run_id=RUN,
            round_index=ROUND,
            purpose=purpose,
            pair=pair,
            tensor="encoder.weight",
        )


def test_mask_key_rejects_short_secret() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        mask_key(
            bytes(15),
            run_id=RUN,
            round_index=ROUND,
            purpose="self",
            pair=None,
            tensor="encoder.weight",
        )


@pytest.mark.parametrize("size", [0, 1, 5, 16384, 40000])
@pytest.mark.parametrize("chunk_words", [1, 7, 16384])
def test_add_masks_equals_one_add_mask_per_key(size: int, chunk_words: int) -> None:
    rng = np.random.default_rng(size)
    masks = [(bytes(rng.integers(0, 256, 16, dtype=np.uint8)), s) for s in (1, -1, 1)]
    start = rng.integers(0, 2**32, size, dtype=np.uint32)
    expected = start.copy()
    for key, sign in masks:
        add_mask(expected, key, sign)

    fused = start.copy()
    add_masks(fused, masks, chunk_words)

    np.testing.assert_array_equal(fused, expected)


def test_add_masks_rejects_bad_sign() -> None:
    with pytest.raises(ValueError, match="sign must be 1 or -1, got 2"):
        add_masks(np.zeros(4, dtype=np.uint32), [(bytes(16), 2)])
