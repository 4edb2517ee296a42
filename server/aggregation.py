"""The aggregation interface of the round loop and its plain-sum implementation."""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from common.tensors import PLAIN_ENCODING

logger = logging.getLogger(__name__)


class AggregationError(ValueError):
    """An upload cannot be added to the aggregate; the message gives the reason."""


class Aggregator(Protocol):
    """Collects the uploads of one task and returns only their sum.

    The round loop creates one aggregator per task and never looks at a single
    upload, so a secure aggregation can replace the plain sum unchanged.
    """

    encoding: str

    def add(self, domain: str, payload: bytes) -> None:
        """Add one domain's upload; raise AggregationError if it is invalid."""
        ...

    def total(self) -> np.ndarray:
        """Return the float64 sum over every upload added so far."""
        ...


class PlainSumAggregator:
    """Sum float64 vectors in the clear, so the coordinator can read each upload.

    Parameters
    ----------
    length
        Number of float64 elements every upload must have.
    """

    encoding = PLAIN_ENCODING

    def __init__(self, length: int) -> None:
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        self._length = length
        self._sum = np.zeros(length, dtype=np.float64)
        self._count = 0

    def add(self, domain: str, payload: bytes) -> None:
        expected = self._length * 8
        if len(payload) != expected:
            raise AggregationError(
                f"upload from {domain!r} has {len(payload)} bytes; this task expects "
                f"{self._length} float64 values ({expected} bytes)"
            )
        vector = np.frombuffer(payload, dtype="<f8")
        if not np.all(np.isfinite(vector)):
            raise AggregationError(f"upload from {domain!r} contains NaN or infinity")
        self._sum += vector
        self._count += 1
        logger.debug("added upload domain=%s bytes=%d", domain, len(payload))

    def total(self) -> np.ndarray:
        if self._count == 0:
            raise AggregationError("no upload was added")
        return self._sum.copy()
