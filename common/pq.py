"""Coordinator side of federated product-quantization k-means, over aggregates only.

The codebook has D subspaces with M centroids each, and every centroid has
S = text_dim / D dimensions. Subspace d quantizes the embedding slice
``[d * S, (d + 1) * S)``. The functions here see only statistics summed over
all domains: first moments (sum, sum of squares, count) and then, for each
k-means iteration, the per-centroid sums and counts.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike, NDArray

logger = logging.getLogger(__name__)

# Counts are integers, but they may arrive through a fixed-point aggregation
# with rounding error, so a cluster counts as empty below half an item.
EMPTY_COUNT = 0.5

# A split moves the two copies of a centroid this fraction of the subspace's
# spread apart. Only the direction of the offset affects the next assignment,
# because the split hyperplane passes through the old centroid.
SPLIT_SCALE = 1e-2


def initial_centroids(
    total_sum: ArrayLike,
    total_sq: ArrayLike,
    count: float,
    n_subspaces: int,
    n_centroids: int,
    seed: int,
) -> NDArray[np.float32]:
    """Draw initial centroids from a Gaussian with the aggregated moments.

    Every coordinate of every centroid is drawn independently from
    N(mean_j, std_j^2), where mean and std are those of embedding coordinate j.

    Parameters
    ----------
    total_sum, total_sq
        [text_dim] sum and sum of squares of all embeddings of all domains.
    count
        Number of embeddings behind the sums; positive.
    n_subspaces, n_centroids
        D and M; ``text_dim`` must be divisible by D.
    seed
        Seed of the draw; the same seed gives the same centroids.

    Returns
    -------
    ndarray
        float32 [D, M, S].

    Raises
    ------
    ValueError
        On mismatched shapes, a count that is not positive, or a ``text_dim``
        not divisible by ``n_subspaces``.
    """
    total_sum = np.asarray(total_sum, dtype=np.float64)
    total_sq = np.asarray(total_sq, dtype=np.float64)
    if total_sum.ndim != 1 or total_sq.shape != total_sum.shape:
        raise ValueError(
            f"total_sum and total_sq must be vectors of the same length, got "
            f"shapes {total_sum.shape} and {total_sq.shape}"
        )
    if not count > 0:
        raise ValueError(f"count must be positive, got {count}; no items were counted")
    _check_positive(n_subspaces=n_subspaces, n_centroids=n_centroids)
    text_dim = total_sum.shape[0]
    subspace_dim = _subspace_dim(text_dim, n_subspaces)

    mean = total_sum / count
    # Rounding can push E[x^2] - E[x]^2 slightly below zero.
    variance = np.maximum(total_sq / count - mean**2, 0.0)
    std = np.sqrt(variance)

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n_subspaces, n_centroids, subspace_dim))
    shape = (n_subspaces, 1, subspace_dim)
    centroids = mean.reshape(shape) + noise * std.reshape(shape)
    return centroids.astype(np.float32)


def iteration_rng(seed: int, iteration: int) -> np.random.Generator:
    """Return the generator for the re-seeding of k-means iteration ``iteration``.

    Deriving it from (seed, iteration) makes every iteration reproducible on
    its own, so a restarted coordinator repeats the same codebook, and the
    local baseline uses the same stream as the federated run.
    """
    if iteration < 1:
        raise ValueError(f"iteration must be >= 1, got {iteration}")
    return np.random.default_rng([seed, iteration])


def update_centroids(
    centroids: ArrayLike,
    sums: ArrayLike,
    counts: ArrayLike,
    seed_or_rng: int | np.random.Generator,
) -> tuple[NDArray[np.float32], int]:
    """Run the update step of Lloyd's algorithm from aggregated cluster statistics.

    Each non-empty centroid becomes the mean of its members, ``sums / counts``.
    A centroid with ``counts < EMPTY_COUNT`` is re-seeded by splitting the
    centroid with the largest count in the same subspace. Both copies start from
    the donor's new mean and move by ``+delta`` and ``-delta``. Each copy keeps
    half of the donor's count when the next donor is chosen, so several empty
    centroids spread over the large clusters.

    The offset ``delta`` is a seeded Gaussian direction with a length of about
    ``SPLIT_SCALE`` times the subspace's spread. The spread is the
    count-weighted RMS distance of the cluster means from the subspace mean, per
    coordinate, so it uses only the aggregates. When the spread is zero, because
    one cluster contains every item, the RMS of the donor's coordinates is used
    instead, or 1.0 when that is zero too.

    Parameters
    ----------
    centroids
        [D, M, S] centroids of the assignment step.
    sums
        [D, M, S] sums of the embedding slices assigned to each centroid.
    counts
        [D, M] number of embeddings assigned to each centroid.
    seed_or_rng
        Seed or generator for the split offsets, such as
        ``iteration_rng(seed, iteration)``.

    Returns
    -------
    tuple
        float32 [D, M, S] new centroids, and the number of re-seeded centroids.

    Raises
    ------
    ValueError
        On mismatched shapes, a negative count, or a subspace without items.
    TypeError
        When ``seed_or_rng`` is None, because re-seeding must be reproducible.
    """
    centroids = np.asarray(centroids, dtype=np.float64)
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    _check_cluster_shapes(centroids, sums, counts)
    if seed_or_rng is None:
        raise TypeError("seed_or_rng must be an int or a numpy Generator, got None")
    rng = np.random.default_rng(seed_or_rng)

    empty = counts < EMPTY_COUNT
    safe_counts = np.where(empty, 1.0, counts)
    means = sums / safe_counts[:, :, None]
    new_centroids = np.where(empty[:, :, None], centroids, means)

    n_reseeded = 0
    for d in range(centroids.shape[0]):
        if empty[d].any():
            n_reseeded += _split_into_empty(new_centroids[d], counts[d], empty[d], rng)
    if n_reseeded:
        logger.debug("k-means update re-seeded %d empty centroids", n_reseeded)
    return new_centroids.astype(np.float32), n_reseeded


def pack_moments(total_sum: ArrayLike, total_sq: ArrayLike, count: float) -> NDArray:
    """Flatten moment statistics into one float64 vector [2 * text_dim + 1].

    Layout: the sum, then the sum of squares, then the count.
    """
    total_sum = np.asarray(total_sum, dtype=np.float64)
    total_sq = np.asarray(total_sq, dtype=np.float64)
    if total_sum.ndim != 1 or total_sq.shape != total_sum.shape:
        raise ValueError(
            f"total_sum and total_sq must be vectors of the same length, got "
            f"shapes {total_sum.shape} and {total_sq.shape}"
        )
    return np.concatenate([total_sum, total_sq, np.array([count], dtype=np.float64)])


def unpack_moments(
    vector: ArrayLike, text_dim: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """Split a vector from :func:`pack_moments` into (sum, sum of squares, count).

    The count is returned as a float because it may come from an aggregation.

    Raises
    ------
    ValueError
        When the length is not ``2 * text_dim + 1``.
    """
    vector = _as_vector(vector)
    _check_positive(text_dim=text_dim)
    expected = 2 * text_dim + 1
    if vector.shape[0] != expected:
        raise ValueError(
            f"moment vector has length {vector.shape[0]}, expected "
            f"2 * text_dim + 1 = {expected} for text_dim={text_dim}"
        )
    return (
        vector[:text_dim].copy(),
        vector[text_dim : 2 * text_dim].copy(),
        float(vector[-1]),
    )


def pack_cluster_stats(sums: ArrayLike, counts: ArrayLike) -> NDArray:
    """Flatten cluster statistics into one float64 vector [D*M*S + D*M].

    Layout: ``sums`` in C order, then ``counts`` in C order.
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if sums.ndim != 3 or counts.shape != sums.shape[:2]:
        raise ValueError(
            f"sums must be [D, M, S] and counts [D, M], got shapes {sums.shape} "
            f"and {counts.shape}"
        )
    return np.concatenate([sums.ravel(), counts.ravel()])


def unpack_cluster_stats(
    vector: ArrayLike, n_subspaces: int, n_centroids: int, subspace_dim: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Split a vector from :func:`pack_cluster_stats` into (sums, counts).

    Raises
    ------
    ValueError
        When the length is not ``D*M*S + D*M``.
    """
    vector = _as_vector(vector)
    _check_positive(
        n_subspaces=n_subspaces, n_centroids=n_centroids, subspace_dim=subspace_dim
    )
    n_sums = n_subspaces * n_centroids * subspace_dim
    expected = n_sums + n_subspaces * n_centroids
    if vector.shape[0] != expected:
        raise ValueError(
            f"cluster statistics vector has length {vector.shape[0]}, expected "
            f"D*M*S + D*M = {expected} for D={n_subspaces}, M={n_centroids}, "
            f"S={subspace_dim}"
        )
    sums = vector[:n_sums].reshape(n_subspaces, n_centroids, subspace_dim).copy()
    counts = vector[n_sums:].reshape(n_subspaces, n_centroids).copy()
    return sums, counts


def _split_into_empty(
    centroids: NDArray[np.float64],
    counts: NDArray[np.float64],
    empty: NDArray[np.bool_],
    rng: np.random.Generator,
) -> int:
    """Re-seed the empty centroids of one subspace in place and return their number."""
    total = counts[~empty].sum()
    if total < EMPTY_COUNT:
        raise ValueError(
            "every centroid of a subspace has a zero count, so no items were "
            "assigned; check that the cluster statistics were aggregated"
        )
    spread = _subspace_spread(centroids, counts, empty, total)
    weights = np.where(empty, 0.0, counts)
    subspace_dim = centroids.shape[1]

    n_reseeded = 0
    for target in np.flatnonzero(empty):
        donor = int(np.argmax(weights))
        scale = spread
        if scale == 0.0:
            scale = float(np.sqrt(np.mean(centroids[donor] ** 2))) or 1.0
        direction = rng.standard_normal(subspace_dim)
        delta = SPLIT_SCALE * scale * direction

        centroids[target] = centroids[donor] + delta
        centroids[donor] = centroids[donor] - delta
        weights[donor] /= 2.0
        weights[target] = weights[donor]
        n_reseeded += 1
    return n_reseeded


def _subspace_spread(
    centroids: NDArray[np.float64],
    counts: NDArray[np.float64],
    empty: NDArray[np.bool_],
    total: float,
) -> float:
    """Return the count-weighted RMS distance per coordinate of cluster means."""
    weights = np.where(empty, 0.0, counts)
    mean = (weights[:, None] * centroids).sum(axis=0) / total
    squared = ((centroids - mean) ** 2).sum(axis=1)
    return float(np.sqrt((weights * squared).sum() / total / centroids.shape[1]))


def _subspace_dim(text_dim: int, n_subspaces: int) -> int:
    if text_dim % n_subspaces:
        raise ValueError(
            f"text_dim ({text_dim}) must be divisible by n_subspaces "
            f"({n_subspaces}), because each subspace quantizes an equal slice"
        )
    return text_dim // n_subspaces


def _check_cluster_shapes(centroids: NDArray, sums: NDArray, counts: NDArray) -> None:
    if centroids.ndim != 3:
        raise ValueError(f"centroids must be [D, M, S], got shape {centroids.shape}")
    if sums.shape != centroids.shape:
        raise ValueError(
            f"sums must have the centroids' shape {centroids.shape}, got {sums.shape}"
        )
    if counts.shape != centroids.shape[:2]:
        raise ValueError(
            f"counts must have shape {centroids.shape[:2]} (D, M), got {counts.shape}"
        )
    if (counts < -EMPTY_COUNT).any():
        raise ValueError(
            f"counts must be >= 0, got a minimum of {counts.min()}; check the "
            "aggregation of the cluster statistics"
        )


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")


def _as_vector(vector: ArrayLike) -> NDArray[np.float64]:
    vector = np.asarray(vector, dtype=np.float64)
    if vector.ndim != 1:
        raise ValueError(f"expected a 1-D vector, got shape {vector.shape}")
    return vector
