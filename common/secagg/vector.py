"""Layout of an upload vector and its encoding into the uint32 ring, and back.

A client's plain upload is a float64 vector whose layout the task fixes: model
deltas times the client's weight followed by the weight, or codebook sums
followed by their counts. Secure aggregation adds vectors mod 2**32, so each
stretch is mapped into the ring before masking:

- a QUANTIZED stretch contains weighted floats w * x. The client divides by w,
  clips x to [-bound, bound], rounds it stochastically to Q levels and sends
  q * w. The ring sum T = sum_u w_u q_u with the summed weight W gives back
  sum_u w_u x_u = T * step - W * bound, with step = 2 bound / (Q - 1).
- an INTEGER stretch contains weights or counts, sent as they are.

The masked vector has one more element after the layout: the number of values
the client clipped, so the coordinator learns only the total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.pb import federation_pb2 as pb
from common.secagg.quantize import RING_SIZE, quantize

SECAGG_ENCODING = "secagg-uint32-le"
QUANTIZED = "quantized"
INTEGER = "integer"
_KINDS = {
    QUANTIZED: pb.SEGMENT_KIND_QUANTIZED,
    INTEGER: pb.SEGMENT_KIND_INTEGER,
}


class LayoutError(ValueError):
    """A vector layout is inconsistent, or a vector does not fit its layout."""


@dataclass(frozen=True)
class Segment:
    """A stretch of an upload vector and how it is encoded.

    Attributes
    ----------
    kind
        ``"quantized"`` or ``"integer"``.
    length
        Number of values, 0 allowed (an empty tensor).
    bound
        Clipping bound of a quantized stretch, in value units.
    weight_offset, weight_repeat
        Value i of a quantized stretch has the weight at vector index
        ``weight_offset + i // weight_repeat``, which must be an integer value.
    """

    kind: str
    length: int
    bound: float = 0.0
    weight_offset: int = 0
    weight_repeat: int = 1


@dataclass(frozen=True)
class VectorLayout:
    """Segments laid end to end; :attr:`length` is the plain vector's length."""

    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        starts = self.starts()
        integer_ranges = [
            (start, start + s.length)
            for start, s in zip(starts, self.segments, strict=True)
            if s.kind == INTEGER
        ]
        for index, segment in enumerate(self.segments):
            _check_segment(index, segment, integer_ranges)

    @property
    def length(self) -> int:
        """Number of values of the plain vector."""
        return sum(s.length for s in self.segments)

    @property
    def masked_length(self) -> int:
        """Number of uint32 values of the masked vector (the layout plus the
        clipped count)."""
        return self.length + 1

    def starts(self) -> list[int]:
        """Return the vector index at which each segment starts."""
        starts = []
        position = 0
        for segment in self.segments:
            starts.append(position)
            position += segment.length
        return starts

    def to_proto(self) -> list[pb.VectorSegment]:
        """Return the segments as wire messages."""
        return [
            pb.VectorSegment(
                kind=_KINDS[s.kind],  # type: ignore[arg-type]
                length=s.length,
                bound=s.bound,
                weight_offset=s.weight_offset,
                weight_repeat=s.weight_repeat,
            )
            for s in self.segments
        ]

    @classmethod
    def from_proto(cls, segments: list[pb.VectorSegment]) -> VectorLayout:
        """Rebuild a layout from wire messages; raise LayoutError if invalid."""
        names = {value: name for name, value in _KINDS.items()}
        parsed = []
        for index, message in enumerate(segments):
            if message.kind not in names:
                raise LayoutError(f"segment {index} has unknown kind {message.kind}")
            parsed.append(
                Segment(
                    kind=names[message.kind],
                    length=message.length,
                    bound=message.bound,
                    weight_offset=message.weight_offset,
                    weight_repeat=message.weight_repeat,
                )
            )
        return cls(tuple(parsed))


def _check_segment(
    index: int, segment: Segment, integer_ranges: list[tuple[int, int]]
) -> None:
    if segment.kind not in _KINDS:
        raise LayoutError(f"segment {index} has unknown kind {segment.kind!r}")
    if segment.length < 0:
        raise LayoutError(f"segment {index} has negative length {segment.length}")
    if segment.kind == INTEGER or segment.length == 0:
        return
    if not (math.isfinite(segment.bound) and segment.bound > 0):
        raise LayoutError(
            f"segment {index} has clipping bound {segment.bound}; it must be "
            "finite and positive"
        )
    if segment.weight_repeat < 1:
        raise LayoutError(
            f"segment {index} has weight_repeat {segment.weight_repeat}; it must "
            "be at least 1"
        )

    # Every weight index of the stretch must fall inside one integer segment.
    first = segment.weight_offset
    last = segment.weight_offset + (segment.length - 1) // segment.weight_repeat
    if not any(start <= first and last < stop for start, stop in integer_ranges):
        raise LayoutError(
            f"segment {index} takes its weights from vector indices {first}..{last}, "
            "which do not lie inside one integer segment"
        )


def train_layout(tensors: list[tuple[str, int]], bounds: list[float]) -> VectorLayout:
    """Lay out a training upload: weighted deltas per tensor, then the weight.

    Parameters
    ----------
    tensors
        ``(name, number of values)`` of each global tensor, in wire order.
    bounds
        Clipping bound of each tensor, same order. Neighbouring tensors with
        the same bound share one segment.
    """
    if len(tensors) != len(bounds):
        raise LayoutError(
            f"got {len(tensors)} tensors but {len(bounds)} clipping bounds"
        )
    n_values = sum(size for _, size in tensors)
    segments: list[Segment] = []
    for (_, size), bound in zip(tensors, bounds, strict=True):
        if segments and segments[-1].bound == bound:
            last = segments[-1]
            size += last.length
            segments.pop()
        segments.append(Segment(QUANTIZED, size, bound, n_values, max(n_values, 1)))
    segments.append(Segment(INTEGER, 1))
    return VectorLayout(tuple(segments))


def moments_layout(text_dim: int) -> VectorLayout:
    """Lay out the codebook moments: sum, sum of squares, then the item count.

    Item embeddings are unit vectors, so the per-item mean of each coordinate
    and of its square lies in [-1, 1].
    """
    return VectorLayout(
        (
            Segment(QUANTIZED, text_dim, 1.0, 2 * text_dim, text_dim),
            Segment(QUANTIZED, text_dim, 1.0, 2 * text_dim, text_dim),
            Segment(INTEGER, 1),
        )
    )


def cluster_layout(
    n_subspaces: int, n_centroids: int, subspace_dim: int
) -> VectorLayout:
    """Lay out one k-means step: per-centroid sums, then per-centroid counts.

    The sums of a centroid are weighted by its count, so each is sent as the
    mean of unit-vector slices, which lies in [-1, 1].
    """
    n_clusters = n_subspaces * n_centroids
    n_sums = n_clusters * subspace_dim
    return VectorLayout(
        (
            Segment(QUANTIZED, n_sums, 1.0, n_sums, subspace_dim),
            Segment(INTEGER, n_clusters),
        )
    )


def check_ring_fits(
    layout: VectorLayout, levels: int, n_clients: int, weight_cap: int
) -> None:
    """Check that no element of the sum of ``n_clients`` encodings wraps mod 2**32.

    Raises
    ------
    ValueError
        When the largest possible sum reaches 2**32. The message names the
        setting to change and the largest value that fits.
    """
    if n_clients < 1 or weight_cap < 1 or levels < 2:
        raise ValueError(
            f"n_clients, weight_cap and levels must be at least 1, 1 and 2, got "
            f"{n_clients}, {weight_cap} and {levels}"
        )
    quantized_sum = n_clients * weight_cap * (levels - 1)
    if quantized_sum >= RING_SIZE:
        fits = (RING_SIZE - 1) // (n_clients * weight_cap) + 1
        raise ValueError(
            f"secure aggregation cannot hold n * weight_cap * (levels - 1) = "
            f"{n_clients} * {weight_cap} * {levels - 1} = {quantized_sum}, which is "
            f"at least 2**32: lower secagg.levels to at most {fits}"
            + (" (no value fits, so use fewer domains)" if fits < 2 else "")
        )
    clipped_sum = n_clients * layout.length
    if clipped_sum >= RING_SIZE:
        raise ValueError(
            f"secure aggregation cannot count clipped values of {n_clients} clients "
            f"with {layout.length} values each in one uint32; use a smaller model"
        )


def encode(
    vector: np.ndarray,
    layout: VectorLayout,
    levels: int,
    weight_cap: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int]:
    """Encode a plain upload into the ring, ready to be masked.

    Parameters
    ----------
    vector
        float64 ``[layout.length]``, the vector the client would upload in the
        clear.
    layout
        The task's layout.
    levels
        Quantization levels Q.
    weight_cap
        Largest integer allowed in an integer segment.
    rng
        Source of the stochastic rounding; it is not part of any mask.

    Returns
    -------
    tuple[numpy.ndarray, int]
        uint32 ``[layout.masked_length]`` with the clipped count last, and
        that count.

    Raises
    ------
    LayoutError
        When the vector has the wrong shape, an integer segment holds a value
        that is not an integer in 0..weight_cap, or a value has weight 0 but
        is not 0.
    """
    vector = np.asarray(vector, dtype=np.float64)
    if vector.shape != (layout.length,):
        raise LayoutError(
            f"upload vector has shape {vector.shape}; the task layout expects "
            f"({layout.length},)"
        )
    if not np.all(np.isfinite(vector)):
        raise LayoutError("upload vector contains NaN or infinity")
    encoded = np.zeros(layout.masked_length, dtype=np.uint32)
    starts = layout.starts()

    # Integer segments first, because quantized segments read their weights.
    for start, segment in zip(starts, layout.segments, strict=True):
        if segment.kind == INTEGER:
            values = vector[start : start + segment.length]
            _check_integers(values, start, weight_cap)
            encoded[start : start + segment.length] = values.astype(np.uint32)

    n_clipped = 0
    for start, segment in zip(starts, layout.segments, strict=True):
        if segment.kind != QUANTIZED or segment.length == 0:
            continue
        values = vector[start : start + segment.length]
        weights = _segment_weights(vector, segment)
        unweighted = np.divide(
            values, weights, out=np.zeros_like(values), where=weights > 0
        )
        stray = (weights == 0) & (values != 0)
        if stray.any():
            index = start + int(np.argmax(stray))
            raise LayoutError(
                f"upload value at index {index} is {vector[index]} but its weight "
                "is 0; a value with weight 0 must be 0"
            )
        quantized, clipped = quantize(unweighted, segment.bound, levels, rng)
        product = quantized.astype(np.uint64) * weights.astype(np.uint64)
        encoded[start : start + segment.length] = product % np.uint64(RING_SIZE)
        n_clipped += clipped
    encoded[-1] = n_clipped
    return encoded, n_clipped


def decode(
    total: np.ndarray, layout: VectorLayout, levels: int
) -> tuple[np.ndarray, int]:
    """Turn the unmasked ring sum into the sum of the plain uploads, in float64.

    Returns
    -------
    tuple[numpy.ndarray, int]
        float64 ``[layout.length]``, within W steps of the plain sum per value
        (W the summed weight of that value), and the total clipped count.

    Raises
    ------
    LayoutError
        When ``total`` has the wrong shape or dtype.
    """
    if not isinstance(total, np.ndarray) or total.dtype != np.uint32:
        raise LayoutError("the ring sum must be a uint32 array")
    if total.shape != (layout.masked_length,):
        raise LayoutError(
            f"the ring sum has shape {total.shape}; the layout expects "
            f"({layout.masked_length},)"
        )
    result = total[:-1].astype(np.float64)
    for start, segment in zip(layout.starts(), layout.segments, strict=True):
        if segment.kind != QUANTIZED or segment.length == 0:
            continue
        weights = _segment_weights(result, segment)
        step = 2 * segment.bound / (levels - 1)
        stretch = result[start : start + segment.length]
        result[start : start + segment.length] = (
            stretch * step - weights * segment.bound
        )
    return result, int(total[-1])


def _segment_weights(vector: np.ndarray, segment: Segment) -> np.ndarray:
    """Return the weight of each value of a quantized segment, as float64."""
    stop = segment.weight_offset + -(-segment.length // segment.weight_repeat)
    weights = vector[segment.weight_offset : stop]
    return np.repeat(weights, segment.weight_repeat)[: segment.length]


def _check_integers(values: np.ndarray, start: int, weight_cap: int) -> None:
    bad = (values != np.round(values)) | (values < 0) | (values > weight_cap)
    if bad.any():
        index = int(np.argmax(bad))
        raise LayoutError(
            f"upload value at index {start + index} is {values[index]}; a weight "
            f"or count must be an integer from 0 to the task's weight_cap "
            f"{weight_cap}"
        )
