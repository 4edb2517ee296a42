"""Gaussian noise from a cryptographic generator, for DP-SGD and the update noise.

The uniform bits come from AES-256 in counter mode (the ``cryptography``
package), keyed from the operating system's generator, and the Box-Muller
transform turns them into Gaussian samples. Each returned value is the sum of
four samples divided by two, which keeps the standard deviation and hides the
floating-point pattern of a single sample. That is the mitigation of
arXiv:2107.10138 (section 5.1) that Opacus's ``secure_mode`` applies.
"""

from __future__ import annotations

import hashlib
import math
import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# Samples summed per returned value. Their sum is divided by the square root
# of this count, which keeps the standard deviation.
SUMMED_SAMPLES = 4


class AesCtrStream:
    """Pseudo-random bytes: AES-256 in counter mode over zero bytes.

    Parameters
    ----------
    key : bytes
        32 bytes. One key must serve one stream only.
    counter : bytes
        The 16-byte initial counter block, zero by default.
    """

    def __init__(self, key: bytes, counter: bytes = bytes(16)) -> None:
        if len(key) != 32:
            raise ValueError(f"key must be 32 bytes for AES-256, got {len(key)}")
        cipher = Cipher(algorithms.AES(key), modes.CTR(counter))
        self._encryptor = cipher.encryptor()

    def read(self, count: int) -> bytes:
        """Return the next ``count`` bytes of the stream."""
        return self._encryptor.update(bytes(count))


class SecureGaussian:
    """Gaussian samples with the ``normal`` method of ``numpy.random.Generator``.

    Parameters
    ----------
    seed : int, optional
        None (the default) takes the key from ``os.urandom``. An integer
        derives the key from it, so tests and benchmarks can replay the noise.
        A seeded generator protects nothing.
    stream : str
        Name mixed into a seeded key, so that generators with one seed and
        different names give different noise.
    """

    def __init__(self, seed: int | None = None, stream: str = "") -> None:
        if seed is None:
            key = os.urandom(32)
        else:
            key = hashlib.sha256(f"fedcdr-noise/{stream}/{seed}".encode()).digest()
        self._stream = AesCtrStream(key)

    def uniform(self, count: int) -> np.ndarray:
        """Return ``count`` float64 values in (0, 1], 53 random bits each."""
        raw = np.frombuffer(self._stream.read(8 * count), dtype=np.uint64)
        return ((raw >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53

    def standard_normal(self, count: int) -> np.ndarray:
        """Return ``count`` independent standard normal samples (Box-Muller)."""
        pairs = (count + 1) // 2
        radius = np.sqrt(-2.0 * np.log(self.uniform(pairs)))
        angle = (2.0 * math.pi) * self.uniform(pairs)
        samples = np.empty(2 * pairs)
        samples[0::2] = radius * np.cos(angle)
        samples[1::2] = radius * np.sin(angle)
        return samples[:count]

    def normal(
        self,
        loc: float = 0.0,
        scale: float = 1.0,
        size: int | tuple[int, ...] | None = None,
    ) -> np.ndarray:
        """Return float64 samples of N(loc, scale^2) with shape ``size``."""
        if scale < 0:
            raise ValueError(f"scale must be 0 or more, got {scale}")
        if size is None:
            shape: tuple[int, ...] = ()
        elif isinstance(size, int):
            shape = (size,)
        else:
            shape = size
        count = math.prod(shape)
        summed = self.standard_normal(SUMMED_SAMPLES * count)
        values = summed.reshape(SUMMED_SAMPLES, count).sum(axis=0)
        values /= math.sqrt(SUMMED_SAMPLES)
        return loc + scale * values.reshape(shape)


__all__ = ["AesCtrStream", "SUMMED_SAMPLES", "SecureGaussian"]
