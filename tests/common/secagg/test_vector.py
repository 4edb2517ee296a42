"""Layouts, ring encoding and decoding of upload vectors, and the mask of one input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.secagg.graph import (
    check_threshold,
    minimum_threshold,
    neighbourhoods,
)
from common.secagg.keys import generate_key_pair
from common.secagg.masking import mask_input, self_mask_key
from common.secagg.prg import add_mask
from common.secagg.vector import (
    INTEGER,
    QUANTIZED,
    LayoutError,
    Segment,
    VectorLayout,
    check_ring_fits,
    cluster_layout,
    decode,
    encode,
    moments_layout,
    train_layout,
)

LEVELS = 2**16


def _sum_encodings(vectors, layout, levels=LEVELS, cap=1000):
    total = np.zeros(layout.masked_length, dtype=np.uint32)
    for index, vector in enumerate(vectors):
        encoded, _ = encode(vector, layout, levels, cap, np.random.default_rng(index))
        total += encoded
    return total


def test_train_layout_merges_equal_bounds():
    layout = train_layout(
        [("a", 3), ("b", 0), ("c", 1), ("d", 2)], [0.1, 0.1, 0.1, 0.2]
    )

    assert [s.kind for s in layout.segments] == [QUANTIZED, QUANTIZED, INTEGER]
    assert [s.length for s in layout.segments] == [4, 2, 1]
    assert layout.length == 7
    assert layout.masked_length == 8


def test_layout_round_trips_through_proto():
    layout = cluster_layout(2, 3, 4)

    assert VectorLayout.from_proto(layout.to_proto()) == layout


def test_layout_rejects_weight_outside_integer_segment():
    with pytest.raises(LayoutError, match="do not lie inside one integer segment"):
        VectorLayout((Segment(QUANTIZED, 3, 1.0, 0, 3), Segment(INTEGER, 1)))


def test_layout_rejects_nonpositive_bound():
    with pytest.raises(LayoutError, match="clipping bound 0.0"):
        VectorLayout((Segment(QUANTIZED, 3, 0.0, 3, 3), Segment(INTEGER, 1)))


@settings(max_examples=25, deadline=None)
@given(
    n=st.sampled_from([2, 3, 4, 10, 100]),
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(0.0, 1.0),
)
def test_decoded_sum_within_bound_of_plain_sum(n, seed, scale):
    rng = np.random.default_rng(seed)
    layout = train_layout([("w", 30), ("b", 2)], [1.0, 0.25])
    vectors = []
    for _ in range(n):
        weight = float(rng.integers(1, 40))
        delta = np.concatenate(
            [rng.uniform(-scale, scale, 30), rng.uniform(-0.25, 0.25, 2) * scale]
        )
        vectors.append(np.append(delta * weight, weight))

    total, clipped = decode(_sum_encodings(vectors, layout), layout, LEVELS)

    plain = np.sum(vectors, axis=0)
    weight = plain[-1]
    bound = np.concatenate([np.full(30, 1.0), np.full(2, 0.25), [0.0]])
    step = 2 * bound / (LEVELS - 1)
    assert clipped == 0
    assert total[-1] == weight
    assert np.all(np.abs(total - plain) <= weight * step + 1e-9)


def test_cluster_stats_round_trip():
    rng = np.random.default_rng(0)
    layout = cluster_layout(2, 3, 4)
    vectors = []
    for _ in range(3):
        counts = rng.integers(0, 5, size=(2, 3)).astype(np.float64)
        means = rng.uniform(-1, 1, size=(2, 3, 4))
        sums = means * counts[..., None]
        vectors.append(np.concatenate([sums.ravel(), counts.ravel()]))

    total, _ = decode(_sum_encodings(vectors, layout), layout, LEVELS)

    plain = np.sum(vectors, axis=0)
    counts = np.repeat(plain[24:], 4)
    assert np.all(np.abs(total[:24] - plain[:24]) <= counts * 2 / (LEVELS - 1) + 1e-9)
    np.testing.assert_array_equal(total[24:], plain[24:])


def test_moments_round_trip():
    rng = np.random.default_rng(1)
    embeddings = rng.standard_normal((10, 8))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    layout = moments_layout(8)
    vector = np.concatenate([embeddings.sum(0), (embeddings**2).sum(0), [10.0]])

    total, clipped = decode(_sum_encodings([vector], layout), layout, LEVELS)

    assert clipped == 0
    np.testing.assert_allclose(total, vector, atol=10 * 2 / (LEVELS - 1) + 1e-9)


def test_clipped_values_are_counted():
    layout = train_layout([("w", 4)], [0.1])
    vector = np.array([0.5, -0.5, 0.05, 0.0, 1.0])

    encoded, clipped = encode(vector, layout, LEVELS, 10, np.random.default_rng(0))

    assert clipped == 2
    assert encoded[-1] == 2


def test_encode_rejects_fractional_weight():
    layout = train_layout([("w", 2)], [0.1])

    with pytest.raises(LayoutError, match="index 2 is 1.5"):
        encode(np.array([0.0, 0.0, 1.5]), layout, LEVELS, 10, np.random.default_rng())


def test_encode_rejects_weight_above_cap():
    layout = train_layout([("w", 2)], [0.1])

    with pytest.raises(LayoutError, match="weight_cap 10"):
        encode(np.array([0.0, 0.0, 11.0]), layout, LEVELS, 10, np.random.default_rng())


def test_encode_rejects_value_with_zero_weight():
    layout = cluster_layout(1, 1, 2)

    with pytest.raises(LayoutError, match="its weight is 0"):
        encode(np.array([0.3, 0.0, 0.0]), layout, LEVELS, 10, np.random.default_rng())


def test_encode_rejects_nan():
    layout = train_layout([("w", 2)], [0.1])

    with pytest.raises(LayoutError, match="NaN"):
        encode(
            np.array([np.nan, 0.0, 1.0]), layout, LEVELS, 10, np.random.default_rng()
        )


def test_ring_check_names_the_setting():
    layout = train_layout([("w", 2)], [0.1])

    with pytest.raises(ValueError, match=r"lower secagg.levels to at most 6554"):
        check_ring_fits(layout, LEVELS, 3, 218_453)


def test_ring_check_passes_at_the_limit():
    layout = train_layout([("w", 2)], [0.1])

    check_ring_fits(layout, 2**16, 1, 65537)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 20), length=st.integers(1, 50), seed=st.integers(0, 1000))
def test_masks_of_every_input_cancel(n, length, seed):
    rng = np.random.default_rng(seed)
    names = [f"d{i:02d}" for i in range(n)]
    keys = {name: generate_key_pair() for name in names}
    seeds = {name: rng.bytes(32) for name in names}
    encoded = {name: rng.integers(0, 2**32, length, dtype=np.uint32) for name in names}

    total = np.zeros(length, dtype=np.uint32)
    for name in names:
        peers = {p: keys[p][1] for p in names if p != name}
        total += mask_input(
            encoded[name],
            domain=name,
            seed=seeds[name],
            mask_private=keys[name][0],
            peer_publics=peers,
            run_id="run",
            round_index=3,
        )
    for name in names:
        add_mask(total, self_mask_key(seeds[name], "run", 3), -1)

    expected = np.sum(list(encoded.values()), axis=0, dtype=np.uint32)
    np.testing.assert_array_equal(total, expected)


def test_neighbourhoods_are_symmetric_and_regular():
    names = [f"d{i:03d}" for i in range(30)]

    hoods = neighbourhoods(names, 6, "run", 1)

    for name, peers in hoods.items():
        assert len(peers) == 6
        assert name not in peers
        for peer in peers:
            assert name in hoods[peer]


def test_neighbourhoods_complete_when_k_is_large():
    hoods = neighbourhoods(["a", "b", "c"], 4, "run", 1)

    assert hoods == {"a": ("b", "c"), "b": ("a", "c"), "c": ("a", "b")}


def test_neighbourhoods_reject_odd_k():
    with pytest.raises(ValueError, match="even number, got 3"):
        neighbourhoods(["a", "b", "c", "d", "e"], 3, "run", 1)


@pytest.mark.parametrize(
    ("n", "mode", "expected"),
    [
        (3, "active", 3),
        (4, "active", 3),
        (10, "active", 7),
        (3, "honest-but-curious", 2),
    ],
)
def test_minimum_threshold(n, mode, expected):
    assert minimum_threshold(n, mode) == expected


def test_check_threshold_rejects_low_value():
    with pytest.raises(ValueError, match="must exceed 2n/3, so at least 7"):
        check_threshold(6, 10, "active")
