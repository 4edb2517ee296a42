"""Client mask generation against the raw AES-128-CTR keystream, on one core."""

from __future__ import annotations

import os
import time
from functools import partial
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from common.secagg.keys import generate_key_pair
from common.secagg.masking import mask_input
from common.secagg.prg import FUSED_CHUNK_WORDS, add_masks
from common.secagg.vector import encode, train_layout

WORD_BYTES = 4
AES_BLOCK_BYTES = 16
# Keystream chunk sizes tried for the reference rate. The fastest one counts, so
# the ratio compares add_masks with the best keystream rate measured.
REFERENCE_CHUNK_WORDS = (16384, 65536)
SWEEP_CHUNK_WORDS = (4096, 8192, 16384, 32768, 65536)


@dataclass(frozen=True)
class MaskRateResult:
    """Rates in uint32 words per CPU-second of the measuring thread, each the
    best of ``repeats`` passes; the ``wall_`` rates use elapsed time instead."""

    words: int
    masks: int
    repeats: int
    mask_words_per_s: float
    aes_ctr_keystream_words_per_s: float
    wall_mask_words_per_s: float
    wall_aes_ctr_keystream_words_per_s: float
    reference_chunk_words: int
    add_only_words_per_s: float
    chunk_sweep_words_per_s: dict[int, float]

    @property
    def ratio(self) -> float:
        """Mask rate over keystream rate, which would be 1.0 if the addition were free."""
        return self.mask_words_per_s / self.aes_ctr_keystream_words_per_s


def _best_times(run: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Return the shortest CPU time of this thread and the shortest wall time
    over ``repeats`` calls of ``run``.

    CPU time leaves out the time that other processes hold the core, which on
    a shared machine makes up most of the spread of wall times.
    """
    best_cpu = float("inf")
    best_wall = float("inf")
    for _ in range(repeats):
        cpu_start = time.thread_time()
        wall_start = time.perf_counter()
        run()
        best_wall = min(best_wall, time.perf_counter() - wall_start)
        best_cpu = min(best_cpu, time.thread_time() - cpu_start)
    return best_cpu, best_wall


def _best_seconds(run: Callable[[], None], repeats: int) -> float:
    """Return the shortest CPU time of this thread over ``repeats`` calls."""
    return _best_times(run, repeats)[0]


def _minimum(
    first: tuple[float, float], second: tuple[float, float]
) -> tuple[float, float]:
    return min(first[0], second[0]), min(first[1], second[1])


def _keystream_pass(keys: list[bytes], words: int, chunk_words: int) -> None:
    """Generate ``words`` keystream words per key into one reused chunk buffer."""
    zeros = memoryview(bytes(chunk_words * WORD_BYTES))
    output = bytearray(chunk_words * WORD_BYTES + AES_BLOCK_BYTES - 1)
    for key in keys:
        encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        for start in range(0, words, chunk_words):
            count = min(chunk_words, words - start)
            encryptor.update_into(zeros[: count * WORD_BYTES], output)


def _mask_pass(buffer: np.ndarray, keys: list[bytes], chunk_words: int) -> None:
    """Add every key's mask in one fused pass, as a client's mask_input does."""
    masks = [(key, 1 if index % 2 == 0 else -1) for index, key in enumerate(keys)]
    add_masks(buffer, masks, chunk_words)


def _add_pass(buffer: np.ndarray, masks: int, chunk_words: int) -> None:
    """Add into a chunk accumulator and then the buffer as add_masks does,
    without the AES."""
    addend = np.ones(chunk_words, dtype=np.uint32)
    accumulator = np.empty(chunk_words, dtype=np.uint32)
    for start in range(0, buffer.size, chunk_words):
        window = buffer[start : start + chunk_words]
        total = accumulator[: window.size]
        total.fill(0)
        for _ in range(masks):
            np.add(total, addend[: window.size], out=total)
        np.add(window, total, out=window)


def measure_mask_rate(words: int, masks: int, repeats: int) -> MaskRateResult:
    """Measure add_masks and the raw keystream over a ``words``-long uint32 buffer.

    Both run in this thread only, alternating pass by pass so that a change of
    load on the machine affects both alike.
    """
    keys = [os.urandom(16) for _ in range(masks)]
    buffer = np.zeros(words, dtype=np.uint32)
    total_words = words * masks

    # Alternate reference and mask passes, keeping the best times of each.
    reference = {chunk: (float("inf"), float("inf")) for chunk in REFERENCE_CHUNK_WORDS}
    mask_times = (float("inf"), float("inf"))
    for _ in range(repeats):
        for chunk in REFERENCE_CHUNK_WORDS:
            times = _best_times(partial(_keystream_pass, keys, words, chunk), 1)
            reference[chunk] = _minimum(reference[chunk], times)
        times = _best_times(partial(_mask_pass, buffer, keys, FUSED_CHUNK_WORDS), 1)
        mask_times = _minimum(mask_times, times)
    reference_chunk = min(reference, key=lambda chunk: reference[chunk][0])
    add_seconds = _best_seconds(
        lambda: _add_pass(buffer, masks, FUSED_CHUNK_WORDS), repeats
    )

    # Chunk sizes of add_masks, each best of a few passes.
    sweep = {}
    for chunk in SWEEP_CHUNK_WORDS:
        seconds = _best_seconds(partial(_mask_pass, buffer, keys, chunk), repeats)
        sweep[chunk] = total_words / seconds

    return MaskRateResult(
        words=words,
        masks=masks,
        repeats=repeats,
        mask_words_per_s=total_words / mask_times[0],
        aes_ctr_keystream_words_per_s=total_words / reference[reference_chunk][0],
        wall_mask_words_per_s=total_words / mask_times[1],
        wall_aes_ctr_keystream_words_per_s=total_words
        / min(wall for _, wall in reference.values()),
        reference_chunk_words=reference_chunk,
        add_only_words_per_s=total_words / add_seconds,
        chunk_sweep_words_per_s=sweep,
    )


@dataclass(frozen=True)
class ClientMaskingResult:
    """Best times, in seconds, of one client's encoding and masking of its update."""

    length: int
    peers: int
    encode_s: float
    mask_s: float


def measure_client_masking(
    length: int, peers: int, repeats: int
) -> ClientMaskingResult:
    """Time encode (clip, stochastic rounding, weighting) and mask_input for one
    client of a training upload with ``length`` values and ``peers`` neighbours."""
    layout = train_layout([("update", length - 1)], [0.01])
    rng = np.random.default_rng(0)
    weight = 60
    vector = np.empty(length, dtype=np.float64)
    vector[:-1] = weight * rng.uniform(-0.009, 0.009, length - 1)
    vector[-1] = weight
    mask_private, _ = generate_key_pair()
    peer_publics = {f"peer-{i:02d}": generate_key_pair()[1] for i in range(peers)}
    encoded = encode(vector, layout, 2**16, weight, rng)[0]

    def run_encode() -> None:
        encode(vector, layout, 2**16, weight, rng)

    def run_mask() -> None:
        mask_input(
            encoded,
            domain="client",
            seed=os.urandom(32),
            mask_private=mask_private,
            peer_publics=peer_publics,
            run_id="bench",
            round_index=1,
        )

    return ClientMaskingResult(
        length=length,
        peers=peers,
        encode_s=_best_seconds(run_encode, repeats),
        mask_s=_best_seconds(run_mask, repeats),
    )
