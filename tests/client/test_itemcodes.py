"""Tests of item embeddings, the embedding cache and product-quantization codes."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from client import itemcodes
from common import pq

D, M, S = 8, 16, 48
TEXT_DIM = D * S


@pytest.fixture(scope="module")
def encoder() -> itemcodes.TextEncoder:
    return itemcodes.TextEncoder()


class CountingEncoder:
    """The real text encoder, counting which texts it was asked to encode."""

    MODEL_NAME = itemcodes.TextEncoder.MODEL_NAME
    shared: itemcodes.TextEncoder | None = None
    encoded: list[str] = []
    builds = 0

    def __init__(self) -> None:
        type(self).builds += 1

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        type(self).encoded.extend(texts)
        assert self.shared is not None
        return self.shared.encode(texts, batch_size)


@pytest.fixture
def counting(encoder: itemcodes.TextEncoder) -> type[CountingEncoder]:
    CountingEncoder.shared = encoder
    CountingEncoder.encoded = []
    CountingEncoder.builds = 0
    return CountingEncoder


def _brute_force_codes(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    slices = x.reshape(len(x), D, S)
    distances = ((slices[:, :, None, :] - centroids[None]) ** 2).sum(axis=3)
    return distances.argmin(axis=2)


@pytest.fixture
def embeddings() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, TEXT_DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def centroids(embeddings: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    c = rng.normal(size=(D, M, S)).astype(np.float32)
    return c * np.float32(np.abs(embeddings).mean())


def test_text_encoder_shape_and_norm(encoder: itemcodes.TextEncoder) -> None:
    vectors = encoder.encode(["a red pen", "a blue notebook", "a film about war"])

    assert vectors.dtype == np.float32
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_text_encoder_similar_texts_closer(encoder: itemcodes.TextEncoder) -> None:
    novel, mystery, stapler = encoder.encode(
        [
            "a detective novel about a murder in Victorian London",
            "crime mystery book in which an inspector solves a killing",
            "stainless steel office stapler, 20 sheet capacity",
        ]
    )

    assert novel @ mystery > novel @ stapler
    assert novel @ mystery > mystery @ stapler


def test_text_encoder_empty_input(encoder: itemcodes.TextEncoder) -> None:
    assert encoder.encode([]).shape == (0, 384)


def test_embed_items_second_call_encodes_nothing(
    counting: type[CountingEncoder], tmp_path: Path
) -> None:
    texts = ["a red pen", "a blue notebook", "a red pen"]

    first = itemcodes.embed_items(texts, tmp_path, counting)
    assert counting.encoded == ["a red pen", "a blue notebook"]
    second = itemcodes.embed_items(texts, tmp_path, counting)

    assert counting.builds == 1
    assert counting.encoded == ["a red pen", "a blue notebook"]
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first[0], first[2])


def test_embed_items_encodes_only_new_text(
    counting: type[CountingEncoder], tmp_path: Path
) -> None:
    itemcodes.embed_items(["a red pen", "a blue notebook"], tmp_path, counting)
    counting.encoded = []

    result = itemcodes.embed_items(
        ["a blue notebook", "a film about war", "a red pen"], tmp_path, counting
    )

    assert counting.encoded == ["a film about war"]
    np.testing.assert_allclose(
        result,
        counting.shared.encode(["a blue notebook", "a film about war", "a red pen"]),
        atol=1e-6,
    )


def test_embed_items_caches_digest_ending_in_nul(
    counting: type[CountingEncoder], tmp_path: Path
) -> None:
    # numpy strips trailing NUL bytes from "S32" arrays, which once made such
    # texts miss the cache on every call.
    name = counting.MODEL_NAME
    text = next(
        f"item {i}"
        for i in range(10_000)
        if hashlib.sha256(f"{name}\0item {i}".encode()).digest()[-1] == 0
    )
    itemcodes.embed_items([text], tmp_path, counting)
    counting.encoded = []

    itemcodes.embed_items([text], tmp_path, counting)

    assert counting.encoded == []


def test_embed_items_rebuilds_corrupt_cache(
    counting: type[CountingEncoder],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    texts = ["a red pen", "a blue notebook"]
    expected = itemcodes.embed_items(texts, tmp_path, counting)
    (cache_file,) = tmp_path.glob("*.npz")
    cache_file.write_bytes(b"PK\x03\x04 truncated")
    counting.encoded = []

    with caplog.at_level(logging.WARNING, logger="client.itemcodes"):
        rebuilt = itemcodes.embed_items(texts, tmp_path, counting)

    assert "unreadable, rebuilding" in caplog.text
    assert counting.encoded == texts
    np.testing.assert_allclose(rebuilt, expected, atol=1e-6)
    assert itemcodes.embed_items(texts, tmp_path, counting).shape == (2, 384)
    assert counting.encoded == texts


def test_embed_items_leaves_no_temp_files(
    counting: type[CountingEncoder], tmp_path: Path
) -> None:
    itemcodes.embed_items(["a red pen"], tmp_path, counting)
    itemcodes.embed_items(["a blue notebook"], tmp_path, counting)

    assert [p.name for p in tmp_path.iterdir()] == ["all-MiniLM-L6-v2.npz"]


def test_embed_items_requires_model_name(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="MODEL_NAME"):
        itemcodes.embed_items(["a red pen"], tmp_path, lambda: None)  # type: ignore[arg-type,return-value]


def test_assign_codes_matches_brute_force(
    embeddings: np.ndarray, centroids: np.ndarray
) -> None:
    codes = itemcodes.assign_codes(embeddings, centroids)

    assert codes.dtype == np.int64
    assert codes.shape == (len(embeddings), D)
    np.testing.assert_array_equal(codes, _brute_force_codes(embeddings, centroids))


def test_assign_codes_empty_input(centroids: np.ndarray) -> None:
    codes = itemcodes.assign_codes(np.zeros((0, TEXT_DIM)), centroids)

    assert codes.shape == (0, D)


@pytest.mark.parametrize(
    ("embeddings_shape", "centroids_shape", "message"),
    [
        ((5, TEXT_DIM + 1), (D, M, S), r"\(8, 16, 48\).*\(5, 385\)"),
        ((5, TEXT_DIM), (D, M), r"got shape \(8, 16\)"),
        ((TEXT_DIM,), (D, M, S), r"got shape \(384,\)"),
    ],
)
def test_assign_codes_shape_mismatch(
    embeddings_shape: tuple[int, ...],
    centroids_shape: tuple[int, ...],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        itemcodes.assign_codes(np.zeros(embeddings_shape), np.zeros(centroids_shape))


def test_cluster_stats_sums_and_counts(
    embeddings: np.ndarray, centroids: np.ndarray
) -> None:
    codes = _brute_force_codes(embeddings, centroids)
    slices = embeddings.reshape(len(embeddings), D, S).astype(np.float64)
    expected_sums = np.zeros((D, M, S))
    expected_counts = np.zeros((D, M))
    for i in range(len(embeddings)):
        for d in range(D):
            expected_sums[d, codes[i, d]] += slices[i, d]
            expected_counts[d, codes[i, d]] += 1

    sums, counts = itemcodes.cluster_stats(embeddings, centroids)

    assert sums.dtype == np.float64
    assert counts.dtype == np.float64
    np.testing.assert_allclose(sums, expected_sums, atol=1e-9)
    np.testing.assert_array_equal(counts, expected_counts)
    np.testing.assert_array_equal(counts.sum(axis=1), np.full(D, len(embeddings)))


def test_moment_stats(embeddings: np.ndarray) -> None:
    total_sum, total_sq, count = itemcodes.moment_stats(embeddings)

    assert count == len(embeddings)
    np.testing.assert_allclose(total_sum, embeddings.astype(np.float64).sum(axis=0))
    np.testing.assert_allclose(
        total_sq, (embeddings.astype(np.float64) ** 2).sum(axis=0)
    )


def test_train_local_codebook_lowers_error(embeddings: np.ndarray) -> None:
    total_sum, total_sq, count = itemcodes.moment_stats(embeddings)
    initial = pq.initial_centroids(total_sum, total_sq, count, D, M, seed=3)

    trained = itemcodes.train_local_codebook(embeddings, D, M, iterations=10, seed=3)

    assert trained.shape == (D, M, S)
    initial_error = itemcodes.quantization_error(embeddings, initial)
    trained_error = itemcodes.quantization_error(embeddings, trained)
    assert trained_error < 0.9 * initial_error


def test_train_local_codebook_deterministic(embeddings: np.ndarray) -> None:
    first = itemcodes.train_local_codebook(embeddings, D, M, iterations=3, seed=3)
    second = itemcodes.train_local_codebook(embeddings, D, M, iterations=3, seed=3)

    np.testing.assert_array_equal(first, second)


def test_train_local_codebook_uses_every_centroid(embeddings: np.ndarray) -> None:
    trained = itemcodes.train_local_codebook(embeddings, D, M, iterations=10, seed=3)

    _, counts = itemcodes.cluster_stats(embeddings, trained)

    assert (counts > 0).all()


def test_train_local_codebook_real_embeddings(
    encoder: itemcodes.TextEncoder,
) -> None:
    texts = [
        f"{color} {thing}"
        for color in ("red", "blue", "green", "black", "white")
        for thing in ("pen", "notebook", "stapler", "novel", "film", "chair")
    ]
    x = encoder.encode(texts)
    initial = pq.initial_centroids(*itemcodes.moment_stats(x), 32, 4, seed=0)

    trained = itemcodes.train_local_codebook(x, 32, 4, iterations=5, seed=0)

    initial_error = itemcodes.quantization_error(x, initial)
    trained_error = itemcodes.quantization_error(x, trained)
    assert trained_error < initial_error
