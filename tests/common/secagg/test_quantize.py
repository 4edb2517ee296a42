"""Tests of clipping, stochastic rounding and dequantization in Z_{2^32}."""

import numpy as np
import pytest

from common.secagg.quantize import (
    DEFAULT_CLIP,
    DEFAULT_LEVELS,
    QuantizationConfig,
    check_ring_capacity,
    dequantize_sum,
    encode_weight,
    quantize,
    weight_quantized,
)

BOUND = 0.05
LEVELS = 2**16
STEP = 2 * BOUND / (LEVELS - 1)


def _deltas(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Draw deltas inside [-BOUND, BOUND], with values at both ends."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(-BOUND, BOUND, size=shape)
    values.reshape(-1)[:2] = [-BOUND, BOUND]
    return values


def test_config_defaults():
    config = QuantizationConfig()

    assert config.levels == DEFAULT_LEVELS == 2**16
    assert config.clip == DEFAULT_CLIP == 0.05
    assert config.step == pytest.approx(STEP)


@pytest.mark.parametrize(
    ("levels", "clip", "error", "message"),
    [
        (1, 0.05, ValueError, r"levels must be in 2\.\.2\*\*32, got 1"),
        (2**32 + 1, 0.05, ValueError, "levels must be in .*, got 4294967297"),
        (2.0, 0.05, TypeError, "levels must be an int, got float"),
        (LEVELS, 0.0, ValueError, "finite and positive, got 0.0"),
        (LEVELS, -1.0, ValueError, "finite and positive, got -1.0"),
        (LEVELS, float("inf"), ValueError, "finite and positive, got inf"),
        (LEVELS, "0.05", TypeError, "clip bound must be a float, got str"),
    ],
)
def test_config_rejects_invalid_settings(levels, clip, error, message):
    with pytest.raises(error, match=message):
        QuantizationConfig(levels=levels, clip=clip)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantize_round_trip_within_step(dtype):
    values = _deltas(0, (3, 7, 11)).astype(dtype)
    # float32(0.05) is slightly above 0.05, so the float32 ends count as clipped.
    exact = values.astype(np.float64).reshape(-1)
    expected_clipped = int(np.count_nonzero(np.abs(exact) > BOUND))

    quantized, n_clipped = quantize(values, BOUND, LEVELS, np.random.default_rng(1))
    restored = dequantize_sum(quantized, 1, BOUND, LEVELS)

    assert quantized.dtype == np.uint32
    assert quantized.shape == (values.size,)
    assert n_clipped == expected_clipped
    assert np.all(quantized <= LEVELS - 1)
    error = np.abs(restored - np.clip(exact, -BOUND, BOUND))
    assert error.max() < STEP
    assert restored[0] == pytest.approx(-BOUND, abs=1e-15)
    assert restored[1] == pytest.approx(BOUND, abs=1e-15)


def test_quantize_unbiased():
    # Each of the 2,000 roundings of a value is a Bernoulli draw of one step, so
    # the mean's standard deviation is at most STEP / (2 sqrt(2000)) ~= STEP / 89.
    # A tolerance of 6 standard deviations (STEP / 15) fails a correct rounding
    # with probability about 2e-9 per value, 2e-7 over the 100 values, and the
    # seed is fixed. A rounding biased by a tenth of a step still fails it.
    values = np.random.default_rng(0).uniform(-BOUND, BOUND, size=100)
    rng = np.random.default_rng(1)
    draws = 2000

    total = np.zeros(values.size)
    for _ in range(draws):
        quantized, _ = quantize(values, BOUND, LEVELS, rng)
        total += dequantize_sum(quantized, 1, BOUND, LEVELS)
    mean = total / draws

    assert np.abs(mean - values).max() < STEP / 15


def test_quantize_unbiased_for_clipped_values():
    values = np.array([-1.0, -BOUND, 0.3 * BOUND, 1.0])
    rng = np.random.default_rng(2)
    draws = 2000

    total = np.zeros(values.size)
    for _ in range(draws):
        quantized, n_clipped = quantize(values, BOUND, 4, rng)
        total += dequantize_sum(quantized, 1, BOUND, 4)
    mean = total / draws

    # With 4 levels one step is 2 BOUND / 3, and the same bound as above holds.
    step = 2 * BOUND / 3
    assert n_clipped == 2
    assert np.abs(mean - np.clip(values, -BOUND, BOUND)).max() < step / 15


def test_quantize_counts_clipped_values():
    values = np.array([-0.2, -BOUND, 0.0, BOUND, 0.051, 1e9])

    quantized, n_clipped = quantize(values, BOUND, LEVELS, np.random.default_rng(0))

    assert n_clipped == 3
    assert quantized.tolist()[0] == 0
    assert quantized.tolist()[1] == 0
    assert quantized.tolist()[3:] == [LEVELS - 1] * 3


def test_quantize_zero_dim_array():
    value = np.array(0.01, dtype=np.float32)

    quantized, n_clipped = quantize(value, BOUND, LEVELS, np.random.default_rng(0))
    restored = dequantize_sum(quantized, 1, BOUND, LEVELS)

    assert quantized.shape == (1,)
    assert n_clipped == 0
    assert abs(restored[0] - 0.01) < STEP


def test_quantize_empty_array():
    values = np.zeros((0, 5), dtype=np.float64)

    quantized, n_clipped = quantize(values, BOUND, LEVELS, np.random.default_rng(0))
    restored = dequantize_sum(quantized, 0, BOUND, LEVELS)

    assert quantized.shape == (0,)
    assert quantized.dtype == np.uint32
    assert n_clipped == 0
    assert restored.shape == (0,)


def test_quantize_max_levels():
    values = np.array([-BOUND, 0.0, BOUND])

    quantized, _ = quantize(values, BOUND, 2**32, np.random.default_rng(0))

    assert quantized[0] == 0
    assert quantized[2] == 2**32 - 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_rejects_non_finite(bad):
    values = np.array([0.0, 0.01, bad, bad])

    with pytest.raises(ValueError, match="got 2 NaN or infinite values, the first at"):
        quantize(values, BOUND, LEVELS, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([1, 2]), "float32 or float64, got int64"),
        (np.array([1.0], dtype=np.float16), "float32 or float64, got float16"),
        ([0.0, 0.01], "numpy array, got list"),
    ],
)
def test_quantize_rejects_non_float(values, message):
    with pytest.raises(TypeError, match=message):
        quantize(values, BOUND, LEVELS, np.random.default_rng(0))


def test_weighted_ring_sum_matches_float_sum():
    n_clients = 5
    weights = [encode_weight(n) for n in (1, 7, 120, 3000, 9000)]
    levels = 2**12
    check_ring_capacity(n_clients, levels, max(weights))
    step = 2 * BOUND / (levels - 1)
    deltas = [_deltas(seed, (64,)) for seed in range(n_clients)]
    rng = np.random.default_rng(3)

    # Add each client's weighted levels in uint32, wrapping mod 2**32.
    total = np.zeros(64, dtype=np.uint32)
    for delta, weight in zip(deltas, weights, strict=True):
        quantized, _ = quantize(delta, BOUND, levels, rng)
        total += weight_quantized(quantized, weight)
    restored = dequantize_sum(total, sum(weights), BOUND, levels)

    expected = sum(w * d for w, d in zip(weights, deltas, strict=True))
    assert np.abs(restored - expected).max() < sum(weights) * step


def test_dequantize_ignores_cancelling_masks():
    weights = [40, 25]
    deltas = [_deltas(seed, (32,)) for seed in range(2)]
    rng = np.random.default_rng(4)
    mask = rng.integers(0, 2**32, size=32, dtype=np.uint64)

    # One client adds the mask and the other subtracts it, both mod 2**32, and
    # the coordinator sums in uint64 without reducing.
    uploads = []
    for delta, weight in zip(deltas, weights, strict=True):
        quantized, _ = quantize(delta, BOUND, LEVELS, rng)
        uploads.append(weight_quantized(quantized, weight).astype(np.uint64))
    masked_total = (uploads[0] + mask) + (uploads[1] + (2**32 - mask) % 2**32)
    plain_total = (uploads[0] + uploads[1]).astype(np.uint32)

    masked = dequantize_sum(masked_total, sum(weights), BOUND, LEVELS)
    plain = dequantize_sum(plain_total, sum(weights), BOUND, LEVELS)

    assert np.array_equal(masked, plain)


def test_weight_quantized_wraps_mod_ring():
    quantized = np.array([0, 1, 2**31], dtype=np.uint32)

    weighted = weight_quantized(quantized, 3)

    assert weighted.dtype == np.uint32
    assert weighted.tolist() == [0, 3, (3 * 2**31) % 2**32]


def test_weight_quantized_rejects_non_uint32():
    with pytest.raises(TypeError, match="uint32 array, got an array of int64"):
        weight_quantized(np.array([1, 2]), 3)


@pytest.mark.parametrize(
    ("total", "count_weight", "error", "message"),
    [
        (np.array([1], dtype=np.int64), 1, TypeError, "got an array of int64"),
        (np.array([1], dtype=np.uint32), -1, ValueError, ">= 0, got -1"),
        (np.array([1], dtype=np.uint32), float("nan"), ValueError, ">= 0, got nan"),
    ],
)
def test_dequantize_rejects_invalid_arguments(total, count_weight, error, message):
    with pytest.raises(error, match=message):
        dequantize_sum(total, count_weight, BOUND, LEVELS)


def test_encode_weight_returns_count():
    assert encode_weight(0) == 0
    assert encode_weight(12345) == 12345
    assert encode_weight(2**32 - 1) == 2**32 - 1


@pytest.mark.parametrize(
    ("n_sequences", "error", "message"),
    [
        (-1, ValueError, r"in 0\.\.4294967295, got -1"),
        (2**32, ValueError, r"in 0\.\.4294967295, got 4294967296"),
        (3.0, TypeError, "must be an int, got float"),
        (True, TypeError, "must be an int, got bool"),
    ],
)
def test_encode_weight_rejects_invalid(n_sequences, error, message):
    with pytest.raises(error, match=message):
        encode_weight(n_sequences)


def test_ring_capacity_accepts_largest_fit():
    # 1 * 65537 * 65535 = 2**32 - 1, the largest sum that does not wrap.
    check_ring_capacity(1, 2**16, 65537)


def test_ring_capacity_rejects_overflow():
    message = (
        r"n_clients \* max_weight \* \(levels - 1\) = 2 \* 40000 \* 65535 = "
        r"5242800000, which is at least 2\*\*32\. Lower the quantization levels "
        r"to at most 53688, or lower max_weight or n_clients\."
    )

    with pytest.raises(ValueError, match=message):
        check_ring_capacity(2, 2**16, 40000)


def test_ring_capacity_advice_fits_ring():
    check_ring_capacity(2, 53688, 40000)

    with pytest.raises(ValueError):
        check_ring_capacity(2, 53689, 40000)


def test_ring_capacity_rejects_when_no_levels_fit():
    with pytest.raises(ValueError, match="No number of levels fits"):
        check_ring_capacity(2**16, 2, 2**16)


@pytest.mark.parametrize(
    ("n_clients", "levels", "max_weight", "error", "message"),
    [
        (0, LEVELS, 1, ValueError, "n_clients must be at least 1, got 0"),
        (1, 1, 1, ValueError, "levels must be at least 2, got 1"),
        (1, LEVELS, 0, ValueError, "max_weight must be at least 1, got 0"),
        (1.0, LEVELS, 1, TypeError, "n_clients must be an int, got float"),
    ],
)
def test_ring_capacity_rejects_invalid(n_clients, levels, max_weight, error, message):
    with pytest.raises(error, match=message):
        check_ring_capacity(n_clients, levels, max_weight)
