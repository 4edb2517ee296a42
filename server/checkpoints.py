"""Global checkpoints of the coordinator: safetensors files written atomically."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from common.atomic import write_bytes_atomic
from server.store import StoreError

logger = logging.getLogger(__name__)

CHECKPOINT_FOLDER = "checkpoints"
CODEBOOK_FOLDER = "codebook"
CENTROIDS = "centroids"
MODEL_PREFIX = "model/"


def round_checkpoint(state_dir: Path, round_index: int) -> Path:
    """Return the checkpoint file of round ``round_index`` (from 1)."""
    return state_dir / CHECKPOINT_FOLDER / f"round-{round_index:04d}.safetensors"


def codebook_checkpoint(state_dir: Path, step: int) -> Path:
    """Return the centroids file after k-means step ``step`` (0: initial)."""
    return state_dir / CODEBOOK_FOLDER / f"step-{step:04d}.safetensors"


def global_state(
    centroids: np.ndarray, weights: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Return the arrays a client downloads: the centroids and the global weights."""
    return {CENTROIDS: centroids, **{MODEL_PREFIX + k: v for k, v in weights.items()}}


def write_checkpoint(
    path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str]
) -> None:
    """Write ``arrays`` to ``path`` as safetensors through a synced rename.

    Raises
    ------
    RuntimeError
        When the file cannot be written; the message names the folder to fix.
    """
    data = save(arrays, metadata=metadata)
    try:
        write_bytes_atomic(path, data)
    except OSError as error:
        raise RuntimeError(
            f"cannot write checkpoint {path}: {error}; check that the folder is "
            "writable and the disk has space"
        ) from None


def load_checkpoint(
    path: Path, expected: dict[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """Read a checkpoint and check that it has exactly the ``expected`` shapes.

    Raises
    ------
    StoreError
        When the file is missing, unreadable or has other tensors or shapes.
    """
    try:
        arrays = load_file(path)
    except (OSError, SafetensorError) as error:
        raise StoreError(
            f"cannot read checkpoint {path} ({error}); restore it from a backup"
        ) from None
    shapes = {name: tuple(array.shape) for name, array in arrays.items()}
    if shapes != expected:
        missing = sorted(set(expected) - set(shapes))
        other = sorted(n for n in shapes if n in expected and shapes[n] != expected[n])
        raise StoreError(
            f"checkpoint {path} does not fit this run's model: missing "
            f"{missing}, other shapes {other}; restore the checkpoint or the "
            "model settings it was written with"
        )
    return arrays
