"""Pack named arrays into one byte payload and move it in chunks under 1 MiB."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from common.pb import federation_pb2 as pb

# gRPC's default message limit is 4 MiB; chunks stay far below it.
CHUNK_BYTES = 512 * 1024
# Explicit limit both sides set on every channel and server.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Largest payload accepted in one download or upload.
MAX_PAYLOAD_BYTES = 1024 * 1024 * 1024
# Encoding of a plain float64 upload, named in UploadHeader.encoding.
PLAIN_ENCODING = "float64-le"
_DTYPES = {"<f4", "<f8", "<i8", "<i4", "<u4"}


class PayloadError(ValueError):
    """A streamed payload is malformed: chunk order, count, size or checksum."""


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> tuple[pb.TensorManifest, bytes]:
    """Lay ``arrays`` end to end in little-endian byte order, in mapping order.

    Returns
    -------
    manifest, payload
        The manifest gives each array's name, dtype, shape and byte range.
    """
    specs = []
    parts = []
    offset = 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array)
        dtype = data.dtype.newbyteorder("<")
        if dtype.str not in _DTYPES:
            raise TypeError(f"array {name!r} has unsupported dtype {data.dtype}")
        raw = data.astype(dtype, copy=False).tobytes()
        specs.append(
            pb.TensorSpec(
                name=name,
                dtype=dtype.str,
                shape=list(data.shape),
                offset=offset,
                nbytes=len(raw),
            )
        )
        parts.append(raw)
        offset += len(raw)
    payload = b"".join(parts)
    manifest = pb.TensorManifest(
        tensors=specs, total_bytes=len(payload), sha256=hashlib.sha256(payload).digest()
    )
    return manifest, payload


def unpack_arrays(manifest: pb.TensorManifest, payload: bytes) -> dict[str, np.ndarray]:
    """Invert :func:`pack_arrays`, checking sizes and the checksum."""
    if len(payload) != manifest.total_bytes:
        raise PayloadError(
            f"payload has {len(payload)} bytes, but the manifest declares {manifest.total_bytes}"
        )
    if hashlib.sha256(payload).digest() != manifest.sha256:
        raise PayloadError("payload SHA-256 does not match the manifest")
    arrays: dict[str, np.ndarray] = {}
    for spec in manifest.tensors:
        if spec.dtype not in _DTYPES:
            raise PayloadError(
                f"tensor {spec.name!r} has unsupported dtype {spec.dtype}"
            )
        dtype = np.dtype(spec.dtype)
        expected = int(np.prod(spec.shape, dtype=np.int64)) * dtype.itemsize
        end = spec.offset + spec.nbytes
        if spec.nbytes != expected or end > len(payload):
            raise PayloadError(
                f"tensor {spec.name!r}: {spec.nbytes} bytes at offset {spec.offset} "
                f"do not fit shape {list(spec.shape)} of {spec.dtype} in a payload "
                f"of {len(payload)} bytes"
            )
        if spec.name in arrays:
            raise PayloadError(f"tensor {spec.name!r} appears twice in the manifest")
        flat = np.frombuffer(
            payload, dtype=dtype, count=expected // dtype.itemsize, offset=spec.offset
        )
        arrays[spec.name] = flat.reshape(tuple(spec.shape)).copy()
    return arrays


def split_payload(payload: bytes, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    """Cut ``payload`` into pieces of at most ``chunk_bytes``; at least one piece."""
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    pieces = [payload[i : i + chunk_bytes] for i in range(0, len(payload), chunk_bytes)]
    return pieces or [b""]


def tensor_chunks(
    manifest: pb.TensorManifest, payload: bytes, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[pb.TensorChunk]:
    """Yield the download stream of a packed payload; chunk 0 carries the manifest."""
    pieces = split_payload(payload, chunk_bytes)
    for index, piece in enumerate(pieces):
        chunk = pb.TensorChunk(index=index, count=len(pieces), data=piece)
        if index == 0:
            chunk.manifest.CopyFrom(manifest)
        yield chunk


def assemble_tensor_chunks(chunks: Iterable[pb.TensorChunk]) -> dict[str, np.ndarray]:
    """Collect a download stream and unpack it, checking chunk order and count."""
    manifest: pb.TensorManifest | None = None
    parts: list[bytes] = []
    count = None
    for expected_index, chunk in enumerate(chunks):
        if chunk.index != expected_index:
            raise PayloadError(
                f"chunk {chunk.index} arrived where chunk {expected_index} was expected"
            )
        if expected_index == 0:
            manifest = chunk.manifest
            count = chunk.count
            if manifest.total_bytes > MAX_PAYLOAD_BYTES:
                raise PayloadError(
                    f"payload of {manifest.total_bytes} bytes exceeds the limit of "
                    f"{MAX_PAYLOAD_BYTES}"
                )
        elif chunk.count != count:
            raise PayloadError(
                f"chunk {chunk.index} declares count {chunk.count}, but chunk 0 declared {count}"
            )
        parts.append(chunk.data)
    if manifest is None or count is None:
        raise PayloadError("the stream ended before its first chunk")
    if len(parts) != count:
        raise PayloadError(f"received {len(parts)} chunks of {count}")
    return unpack_arrays(manifest, b"".join(parts))
