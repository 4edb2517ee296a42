"""Tests of the coordinator side of federated product-quantization k-means."""

from __future__ import annotations

import numpy as np
import pytest

from common import pq

D, M, S = 4, 8, 6
TEXT_DIM = D * S


def _lloyd_stats(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compute per-centroid sums and counts by brute force, as one domain would."""
    slices = x.reshape(len(x), D, S)
    sums = np.zeros((D, M, S))
    counts = np.zeros((D, M))
    for d in range(D):
        distances = ((slices[:, d, None, :] - centroids[d][None]) ** 2).sum(axis=2)
        nearest = distances.argmin(axis=1)
        for m in range(M):
            members = slices[nearest == m, d]
            sums[d, m] = members.sum(axis=0)
            counts[d, m] = len(members)
    return sums, counts


def _centralized_lloyd(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Run one plain Lloyd step in which empty clusters keep their centroid."""
    sums, counts = _lloyd_stats(x, centroids)
    means = sums / np.maximum(counts, 1)[:, :, None]
    return np.where(counts[:, :, None] > 0, means, centroids)


@pytest.fixture
def domains() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.normal(size=(n, TEXT_DIM)) for n in (300, 120, 80)]


def test_update_centroids_matches_centralized_lloyd(
    domains: list[np.ndarray],
) -> None:
    union = np.concatenate(domains)
    # Centroids drawn from the data, so no cluster is empty.
    centroids = union[:M].reshape(M, D, S).transpose(1, 0, 2).copy()
    per_domain = [_lloyd_stats(x, centroids) for x in domains]
    sums = sum(stats[0] for stats in per_domain)
    counts = sum(stats[1] for stats in per_domain)

    updated, n_reseeded = pq.update_centroids(centroids, sums, counts, 0)

    assert n_reseeded == 0
    np.testing.assert_allclose(
        updated, _centralized_lloyd(union, centroids), rtol=1e-5, atol=1e-6
    )


def test_update_centroids_dtype_and_shape(domains: list[np.ndarray]) -> None:
    centroids = np.zeros((D, M, S))
    sums, counts = _lloyd_stats(domains[0], centroids + np.arange(M)[:, None])

    updated, _ = pq.update_centroids(centroids, sums, counts, 0)

    assert updated.dtype == np.float32
    assert updated.shape == (D, M, S)


def test_update_centroids_reseeds_empty_clusters() -> None:
    rng = np.random.default_rng(3)
    centroids = rng.normal(size=(D, M, S))
    sums = rng.normal(size=(D, M, S))
    counts = rng.integers(1, 50, size=(D, M)).astype(float)
    empty = [(0, 1), (0, 5), (2, 7)]
    for d, m in empty:
        counts[d, m] = 0.0
        sums[d, m] = 0.0

    updated, n_reseeded = pq.update_centroids(centroids, sums, counts, 11)

    assert n_reseeded == len(empty)
    assert np.isfinite(updated).all()
    for d, m in empty:
        # A re-seeded centroid sits near a populated mean, not at its old place.
        means = sums[d] / np.maximum(counts[d], 1)[:, None]
        distances = np.linalg.norm(means - updated[d, m], axis=1)
        assert distances.min() < 0.1
        assert not np.allclose(updated[d, m], centroids[d, m])


def test_update_centroids_split_is_symmetric() -> None:
    centroids = np.zeros((1, 2, S))
    sums = np.zeros((1, 2, S))
    sums[0, 0] = np.arange(S, dtype=float) * 10
    counts = np.array([[10.0, 0.0]])
    mean = sums[0, 0] / 10

    updated, n_reseeded = pq.update_centroids(centroids, sums, counts, 5)

    assert n_reseeded == 1
    np.testing.assert_allclose(updated[0].mean(axis=0), mean, atol=1e-5)
    assert not np.allclose(updated[0, 0], updated[0, 1])


def test_update_centroids_splits_largest_cluster() -> None:
    centroids = np.zeros((1, 3, S))
    sums = np.zeros((1, 3, S))
    sums[0, 0] = 1.0 * 5
    sums[0, 1] = -1.0 * 50
    counts = np.array([[5.0, 50.0, 0.0]])

    updated, _ = pq.update_centroids(centroids, sums, counts, 5)

    np.testing.assert_allclose(updated[0, 0], np.full(S, 1.0), atol=1e-6)
    np.testing.assert_allclose(updated[0, 2], np.full(S, -1.0), atol=0.1)


def test_update_centroids_rejects_empty_subspace() -> None:
    with pytest.raises(ValueError, match="no items were assigned"):
        pq.update_centroids(
            np.zeros((D, M, S)), np.zeros((D, M, S)), np.zeros((D, M)), 0
        )


def test_update_centroids_rejects_none_rng() -> None:
    counts = np.ones((D, M))
    with pytest.raises(TypeError, match="seed_or_rng"):
        pq.update_centroids(np.zeros((D, M, S)), np.zeros((D, M, S)), counts, None)


@pytest.mark.parametrize(
    ("sums_shape", "counts_shape", "message"),
    [
        ((D, M, S + 1), (D, M), "sums must have"),
        ((D, M, S), (D, M + 1), "counts must have"),
    ],
)
def test_update_centroids_shape_mismatch(
    sums_shape: tuple[int, ...], counts_shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        pq.update_centroids(
            np.zeros((D, M, S)), np.zeros(sums_shape), np.ones(counts_shape), 0
        )


def test_update_centroids_deterministic() -> None:
    rng = np.random.default_rng(9)
    centroids = rng.normal(size=(D, M, S))
    sums = rng.normal(size=(D, M, S))
    counts = rng.integers(0, 3, size=(D, M)).astype(float)
    counts[:, 0] = 5.0

    first, _ = pq.update_centroids(centroids, sums, counts, pq.iteration_rng(1, 2))
    second, _ = pq.update_centroids(centroids, sums, counts, pq.iteration_rng(1, 2))
    other, _ = pq.update_centroids(centroids, sums, counts, pq.iteration_rng(1, 3))

    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_initial_centroids_deterministic() -> None:
    x = np.random.default_rng(0).normal(size=(50, TEXT_DIM))
    moments = (x.sum(axis=0), (x**2).sum(axis=0), len(x))

    first = pq.initial_centroids(*moments, D, M, seed=4)
    second = pq.initial_centroids(*moments, D, M, seed=4)
    other = pq.initial_centroids(*moments, D, M, seed=5)

    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_initial_centroids_follow_moments() -> None:
    rng = np.random.default_rng(1)
    mean = rng.normal(size=TEXT_DIM)
    std = rng.uniform(0.5, 2.0, size=TEXT_DIM)
    x = mean + std * rng.standard_normal((20000, TEXT_DIM))

    centroids = pq.initial_centroids(
        x.sum(axis=0), (x**2).sum(axis=0), len(x), D, 4000, seed=0
    )

    assert centroids.dtype == np.float32
    assert centroids.shape == (D, 4000, S)
    flat = centroids.transpose(1, 0, 2).reshape(4000, TEXT_DIM)
    np.testing.assert_allclose(flat.mean(axis=0), mean, atol=0.15)
    np.testing.assert_allclose(flat.std(axis=0), std, rtol=0.1)


@pytest.mark.parametrize("count", [0, -1.0])
def test_initial_centroids_rejects_bad_count(count: float) -> None:
    with pytest.raises(ValueError, match="count must be positive"):
        pq.initial_centroids(np.zeros(TEXT_DIM), np.zeros(TEXT_DIM), count, D, M, 0)


def test_initial_centroids_rejects_indivisible_dim() -> None:
    with pytest.raises(ValueError, match="divisible by n_subspaces"):
        pq.initial_centroids(np.zeros(10), np.zeros(10), 5, 3, M, 0)


def test_moments_round_trip() -> None:
    rng = np.random.default_rng(2)
    total_sum, total_sq = rng.normal(size=TEXT_DIM), rng.uniform(size=TEXT_DIM)

    vector = pq.pack_moments(total_sum, total_sq, 17)
    got_sum, got_sq, got_count = pq.unpack_moments(vector, TEXT_DIM)

    assert vector.dtype == np.float64
    assert vector.shape == (2 * TEXT_DIM + 1,)
    np.testing.assert_array_equal(got_sum, total_sum)
    np.testing.assert_array_equal(got_sq, total_sq)
    assert got_count == 17.0


def test_cluster_stats_round_trip() -> None:
    rng = np.random.default_rng(2)
    sums, counts = rng.normal(size=(D, M, S)), rng.integers(0, 9, size=(D, M))

    vector = pq.pack_cluster_stats(sums, counts)
    got_sums, got_counts = pq.unpack_cluster_stats(vector, D, M, S)

    assert vector.dtype == np.float64
    assert vector.shape == (D * M * S + D * M,)
    np.testing.assert_array_equal(got_sums, sums)
    np.testing.assert_array_equal(got_counts, counts)


def test_unpack_moments_wrong_length() -> None:
    with pytest.raises(ValueError, match=r"length 10, expected .* = 49"):
        pq.unpack_moments(np.zeros(10), TEXT_DIM)


def test_unpack_cluster_stats_wrong_length() -> None:
    expected = D * M * S + D * M
    with pytest.raises(
        ValueError, match=rf"length {expected - 1}, expected .* {expected}"
    ):
        pq.unpack_cluster_stats(np.zeros(expected - 1), D, M, S)


def test_pack_cluster_stats_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"got shapes \(4, 8, 6\) and \(4, 7\)"):
        pq.pack_cluster_stats(np.zeros((D, M, S)), np.zeros((D, M - 1)))


def test_iteration_rng_rejects_zero() -> None:
    with pytest.raises(ValueError, match="iteration must be >= 1"):
        pq.iteration_rng(0, 0)
