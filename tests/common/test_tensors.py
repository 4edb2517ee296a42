"""Packing and chunked streaming of named arrays."""

import numpy as np
import pytest

from common.pb import federation_pb2 as pb
from common.tensors import (
    CHUNK_BYTES,
    PayloadError,
    assemble_tensor_chunks,
    pack_arrays,
    tensor_chunks,
    unpack_arrays,
)


def _large_state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "code_embedding.weight": rng.standard_normal((8224, 128)).astype(np.float32),
        "encoder.layers.0.linear1.weight": rng.standard_normal((256, 64)).astype(
            np.float32
        ),
        "centroids": rng.standard_normal((32, 256, 12)).astype(np.float32),
        "counts": np.arange(7, dtype=np.int64),
    }


def test_chunks_round_trip_state_larger_than_4_mib():
    state = _large_state()
    manifest, payload = pack_arrays(state)

    chunks = list(tensor_chunks(manifest, payload))
    restored = assemble_tensor_chunks(iter(chunks))

    assert len(payload) > 4 * 1024 * 1024
    assert max(c.ByteSize() for c in chunks) < 1024 * 1024
    assert list(restored) == list(state)
    for name, array in state.items():
        np.testing.assert_array_equal(restored[name], array)
        assert restored[name].dtype == array.dtype


def test_chunks_keep_manifest_only_in_first():
    manifest, payload = pack_arrays(_large_state())

    chunks = list(tensor_chunks(manifest, payload))

    assert chunks[0].HasField("manifest")
    assert not any(c.HasField("manifest") for c in chunks[1:])
    assert all(len(c.data) <= CHUNK_BYTES for c in chunks)


def test_assemble_rejects_reordered_chunks():
    manifest, payload = pack_arrays(_large_state())
    chunks = list(tensor_chunks(manifest, payload))
    chunks[1], chunks[2] = chunks[2], chunks[1]

    with pytest.raises(PayloadError, match="chunk 2 arrived where chunk 1"):
        assemble_tensor_chunks(iter(chunks))


def test_assemble_rejects_missing_chunk():
    manifest, payload = pack_arrays(_large_state())
    chunks = list(tensor_chunks(manifest, payload))[:-1]

    with pytest.raises(PayloadError, match="chunks of"):
        assemble_tensor_chunks(iter(chunks))


def test_assemble_rejects_empty_stream():
    with pytest.raises(PayloadError, match="before its first chunk"):
        assemble_tensor_chunks(iter([]))


def test_unpack_rejects_corrupted_payload():
    manifest, payload = pack_arrays({"a": np.ones(4, dtype=np.float32)})
    corrupted = bytes([payload[0] ^ 1]) + payload[1:]

    with pytest.raises(PayloadError, match="SHA-256"):
        unpack_arrays(manifest, corrupted)


def test_unpack_rejects_shape_that_does_not_fit():
    manifest, payload = pack_arrays({"a": np.ones(4, dtype=np.float32)})
    manifest.tensors[0].shape[:] = [5]

    with pytest.raises(PayloadError, match="do not fit shape"):
        unpack_arrays(manifest, payload)


def test_pack_rejects_unsupported_dtype():
    with pytest.raises(TypeError, match="unsupported dtype"):
        pack_arrays({"a": np.ones(2, dtype=np.complex64)})


def test_pack_empty_mapping_streams_one_chunk():
    manifest, payload = pack_arrays({})

    chunks = list(tensor_chunks(manifest, payload))

    assert len(chunks) == 1
    assert assemble_tensor_chunks(iter(chunks)) == {}
    assert isinstance(chunks[0], pb.TensorChunk)
