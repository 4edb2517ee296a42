"""Clipping, stochastic rounding and dequantization of model deltas in the ring Z_{2^32}.

Secure aggregation masks integer vectors, so each client maps its float delta into
the ring before masking and the coordinator maps the unmasked sum back.

Weighting. A client quantizes its *unweighted* parameter delta x with bound B,
multiplies the integer vector q by its integer weight w (the number of training
sequences, see :func:`encode_weight`) with :func:`weight_quantized`, and sends w
itself as one more ring element. The coordinator sums both mod 2**32 and calls
:func:`dequantize_sum` with the summed weight W. That returns an estimate of
sum_u w_u x_u, the sum of the float uploads (delta times weight), so dividing
by W gives the FedAvg mean. Quantizing the already weighted delta instead would
make the bound depend on the weight, and a large weight would need either a
huge B, which coarsens the steps of every client, or clipping of most values.
The price of this design is that the ring must hold n * max_weight *
(levels - 1) without wrapping, which :func:`check_ring_capacity` enforces.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

RING_BITS = 32
RING_SIZE = 2**RING_BITS

# NOTE: the default bound is an estimate, not a measured fedcdr statistic. The
# clients train with AdamW (learning rate 1e-3 by default), whose update per
# step is at most about the learning rate, so 0.05 lets a value move 50 full
# steps in one round before it is clipped. Callers should log n_clipped per
# round and raise clip where it is often nonzero.
DEFAULT_CLIP = 0.05
# 2**16 levels leave room for n_clients * max_weight up to 65537, for example two
# domains of 32,768 training sequences each. Larger runs need fewer levels, and
# check_ring_capacity gives the largest number that fits.
DEFAULT_LEVELS = 2**16


@dataclass(frozen=True)
class QuantizationConfig:
    """Quantization settings shared by every client and the coordinator of a run.

    Attributes
    ----------
    levels
        Number of integer levels, 2 <= levels <= 2**32. A quantized value lies
        in 0..levels-1.
    clip
        Per-value clipping bound B of the unweighted delta. Values are clipped
        to [-B, B] before rounding, so one quantization step is
        2 B / (levels - 1), about 1.5e-6 with the defaults.
    """

    levels: int = DEFAULT_LEVELS
    clip: float = DEFAULT_CLIP

    def __post_init__(self) -> None:
        _check_bound_and_levels(self.clip, self.levels)

    @property
    def step(self) -> float:
        """Width of one quantization level, in delta units."""
        return 2 * self.clip / (self.levels - 1)


def quantize(
    values: np.ndarray, bound: float, levels: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Clip ``values`` to [-bound, bound] and round them stochastically to levels.

    A clipped value x maps to s = (x + bound) * (levels - 1) / (2 bound) in
    [0, levels - 1], which is rounded up with probability s - floor(s) and down
    otherwise. So E[q] = s, and dequantizing q is an unbiased estimate of the
    clipped value, with an error below one step 2 bound / (levels - 1).

    Parameters
    ----------
    values
        float32 or float64 array of any shape, including 0-d and empty. The
        caller concatenates named tensors in a fixed order beforehand.
    bound, levels
        As :class:`QuantizationConfig` ``clip`` and ``levels``.
    rng
        Source of the rounding decisions. It is not a mask, so numpy's
        generator is enough.

    Returns
    -------
    tuple[numpy.ndarray, int]
        The uint32 levels, flattened in C order to shape ``[values.size]``, and
        the number of values whose magnitude exceeded ``bound``.

    Raises
    ------
    TypeError
        If ``values`` is not a float32 or float64 array.
    ValueError
        If ``values`` contains NaN or infinity, which signals a diverged model
        rather than a large update, or if ``bound`` or ``levels`` is invalid.
    """
    _check_bound_and_levels(bound, levels)
    if not isinstance(values, np.ndarray):
        raise TypeError(f"values must be a numpy array, got {type(values).__name__}")
    if values.dtype not in (np.float32, np.float64):
        raise TypeError(f"values must be float32 or float64, got {values.dtype}")
    flat = values.astype(np.float64).reshape(-1)
    finite = np.isfinite(flat)
    if not finite.all():
        first = int(np.argmin(finite))
        raise ValueError(
            f"values must be finite, got {flat.size - int(finite.sum())} NaN or "
            f"infinite values, the first at flat index {first}"
        )

    # Clip and map [-bound, bound] linearly onto [0, levels - 1].
    n_clipped = int(np.count_nonzero(np.abs(flat) > bound))
    clipped = np.clip(flat, -bound, bound)
    scaled = (clipped + bound) * ((levels - 1) / (2 * bound))

    # Round up with probability equal to the fractional part. The minimum only
    # catches a float rounding of scaled to just above levels - 1.
    lower = np.floor(scaled)
    round_up = rng.random(flat.size) < scaled - lower
    quantized = np.minimum(lower + round_up, levels - 1)
    return quantized.astype(np.uint32), n_clipped


def weight_quantized(quantized: np.ndarray, weight: int) -> np.ndarray:
    """Multiply quantized levels by an integer client weight in the ring.

    Returns
    -------
    numpy.ndarray
        uint32 ``quantized * weight mod 2**32``, the same shape as ``quantized``.
        The product does not wrap when :func:`check_ring_capacity` passed for
        this weight.

    Raises
    ------
    TypeError
        If ``quantized`` is not a uint32 array or ``weight`` is not an int.
    ValueError
        If ``weight`` is outside 0..2**32-1.
    """
    if not isinstance(quantized, np.ndarray) or quantized.dtype != np.uint32:
        raise TypeError(
            f"quantized must be a uint32 array, got {_describe_array(quantized)}"
        )
    checked = encode_weight(weight)
    product = quantized.astype(np.uint64) * np.uint64(checked) % np.uint64(RING_SIZE)
    return product.astype(np.uint32)


def dequantize_sum(
    total: np.ndarray, count_weight: float, bound: float, levels: int
) -> np.ndarray:
    """Recover sum_u w_u x_u from the ring sum of the clients' weighted levels.

    Each level encodes q = (x + bound) (levels - 1) / (2 bound), so the sum
    T = sum_u w_u q_u equals (sum_u w_u x_u + W bound) (levels - 1) / (2 bound),
    and this returns T * 2 bound / (levels - 1) - W bound. The error per value is
    below W times one step, or W times the clipping error where values were
    clipped.

    Parameters
    ----------
    total
        uint32 or uint64 sum over clients of :func:`weight_quantized` output.
        A uint64 total is reduced mod 2**32 first, so a sum that still
        contains cancelling masks gives the same result.
    count_weight
        The summed weight W = sum_u w_u of the clients in ``total``.
    bound, levels
        The settings the clients quantized with.

    Returns
    -------
    numpy.ndarray
        float64, the same shape as ``total``.

    Raises
    ------
    TypeError
        If ``total`` is not a uint32 or uint64 array.
    ValueError
        If ``count_weight`` is negative or not finite, or ``bound`` or
        ``levels`` is invalid.
    """
    _check_bound_and_levels(bound, levels)
    if not isinstance(total, np.ndarray) or total.dtype not in (np.uint32, np.uint64):
        raise TypeError(
            f"total must be a uint32 or uint64 array, got {_describe_array(total)}"
        )
    if not math.isfinite(count_weight) or count_weight < 0:
        raise ValueError(f"count_weight must be finite and >= 0, got {count_weight}")

    # The true sum is below 2**32 when the ring capacity check passed, so the
    # value mod 2**32 is the sum itself.
    reduced = total.astype(np.uint64) % np.uint64(RING_SIZE)
    step = 2 * bound / (levels - 1)
    return reduced.astype(np.float64) * step - count_weight * bound


def encode_weight(n_sequences: int) -> int:
    """Check a client's number of training sequences and return it as its weight.

    The float path already weights a delta by this count, so the integer weight
    is the count itself and loses nothing. The range check makes sure that
    the weight fits in one ring element.

    Raises
    ------
    TypeError
        If ``n_sequences`` is not an int.
    ValueError
        If ``n_sequences`` is outside 0..2**32-1.
    """
    if isinstance(n_sequences, bool) or not isinstance(n_sequences, int):
        raise TypeError(
            f"the weight (number of training sequences) must be an int, got "
            f"{type(n_sequences).__name__}"
        )
    if not 0 <= n_sequences < RING_SIZE:
        raise ValueError(
            f"the weight (number of training sequences) must be in "
            f"0..{RING_SIZE - 1}, got {n_sequences}"
        )
    return n_sequences


def check_ring_capacity(n_clients: int, levels: int, max_weight: int) -> None:
    """Check that the sum of every client's weighted levels fits in the ring.

    The largest possible sum is n_clients * max_weight * (levels - 1). If it
    reached 2**32, the sum would wrap and the coordinator would dequantize
    values that are off by a multiple of 2**32 steps without any sign of error.

    Raises
    ------
    TypeError
        If an argument is not an int.
    ValueError
        If an argument is below its minimum (1 client, 2 levels, weight 1), or
        the largest sum reaches 2**32. The message gives the largest levels that fit.
    """
    for name, value, minimum in (
        ("n_clients", n_clients, 1),
        ("levels", levels, 2),
        ("max_weight", max_weight, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {value}")

    largest_sum = n_clients * max_weight * (levels - 1)
    if largest_sum < RING_SIZE:
        return
    weight_total = n_clients * max_weight
    max_levels = (RING_SIZE - 1) // weight_total + 1
    if max_levels >= 2:
        advice = (
            f"Lower the quantization levels to at most {max_levels}, or lower "
            "max_weight or n_clients."
        )
    else:
        advice = "No number of levels fits, so lower max_weight or n_clients."
    raise ValueError(
        f"the uint32 ring cannot hold n_clients * max_weight * (levels - 1) = "
        f"{n_clients} * {max_weight} * {levels - 1} = {largest_sum}, which is "
        f"at least 2**32. {advice}"
    )


def _check_bound_and_levels(bound: float, levels: int) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int):
        raise TypeError(f"levels must be an int, got {type(levels).__name__}")
    if not 2 <= levels <= RING_SIZE:
        raise ValueError(f"levels must be in 2..2**32, got {levels}")
    if not isinstance(bound, numbers.Real) or isinstance(bound, bool):
        raise TypeError(f"the clip bound must be a float, got {type(bound).__name__}")
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"the clip bound must be finite and positive, got {bound}")


def _describe_array(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype}"
    return type(value).__name__
