"""The coordinator's gRPC servicer on a real server bound to 127.0.0.1 port 0."""

import hashlib
from concurrent import futures

import grpc
import numpy as np
import pytest

from common.config import CoordinatorConfig, TLSConfig
from common.pb import federation_pb2 as pb
from common.pb import federation_pb2_grpc as pb_grpc
from common.runconfig import PROTOCOL_VERSION
from common.tensors import assemble_tensor_chunks, pack_arrays
from server.aggregation import PlainSumAggregator
from server.federation import Federation, Task
from server.servicer import CoordinatorServicer

STATS = pb.DomainStats(n_users=10, n_items=20, n_interactions=100)


@pytest.fixture
def served():
    config = CoordinatorConfig(
        run_id="run", domains=("a", "b"), tls=TLSConfig(insecure=True)
    )
    federation = Federation(config)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_CoordinatorServicer_to_server(
        CoordinatorServicer(federation, insecure=True), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.CoordinatorStub(channel)
    stub.Join(
        pb.JoinRequest(domain="a", protocol_version=PROTOCOL_VERSION, stats=STATS)
    )
    yield federation, stub
    channel.close()
    server.stop(grace=None)


def _publish(federation: Federation, length: int = 4) -> Task:
    task = Task(
        kind=pb.TASK_KIND_TRAIN,
        task_id="train-1",
        participants=federation.active_domains(),
        vector_length=length,
        download=pack_arrays({"w": np.arange(300_000, dtype=np.float32)}),
        aggregator=PlainSumAggregator(length),
        round=1,
    )
    federation._task = task
    return task


def _upload_messages(
    payload: bytes, count=None, sha=None, run_id="run", pieces=None, task_id="train-1"
):
    pieces = pieces if pieces is not None else [payload[:16], payload[16:]]
    header = pb.UploadHeader(
        domain="a",
        run_id=run_id,
        task_id=task_id,
        encoding="float64-le",
        total_bytes=len(payload),
        count=len(pieces) if count is None else count,
        sha256=hashlib.sha256(payload).digest() if sha is None else sha,
    )
    yield pb.UploadChunk(header=header)
    for piece in pieces:
        yield pb.UploadChunk(data=piece)


def test_join_rejects_wrong_protocol_version(served):
    _, stub = served

    with pytest.raises(grpc.RpcError) as caught:
        stub.Join(pb.JoinRequest(domain="b", protocol_version=99, stats=STATS))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "protocol_version 99" in caught.value.details()


def test_join_rejects_unlisted_domain(served):
    _, stub = served

    with pytest.raises(grpc.RpcError) as caught:
        stub.Join(
            pb.JoinRequest(domain="x", protocol_version=PROTOCOL_VERSION, stats=STATS)
        )

    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_download_streams_task_state(served):
    federation, stub = served
    _publish(federation)

    arrays = assemble_tensor_chunks(
        stub.Download(pb.DownloadRequest(domain="a", run_id="run", task_id="train-1"))
    )

    np.testing.assert_array_equal(arrays["w"], np.arange(300_000, dtype=np.float32))


def test_upload_accepted_then_duplicate(served):
    federation, stub = served
    task = _publish(federation)
    payload = np.array([1, 2, 3, 4], dtype="<f8").tobytes()

    response = stub.Upload(_upload_messages(payload))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Upload(_upload_messages(payload))

    assert response.received_bytes == 32
    np.testing.assert_array_equal(task.aggregator.total(), [1, 2, 3, 4])
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("kwargs", "code", "message"),
    [
        ({"count": 5}, grpc.StatusCode.INVALID_ARGUMENT, "header declares 5"),
        ({"sha": b"x" * 32}, grpc.StatusCode.INVALID_ARGUMENT, "SHA-256"),
        ({"run_id": "other"}, grpc.StatusCode.INVALID_ARGUMENT, "run_id 'other'"),
    ],
)
def test_upload_rejects_malformed_stream(served, kwargs, code, message):
    federation, stub = served
    _publish(federation)
    payload = np.array([1, 2, 3, 4], dtype="<f8").tobytes()

    with pytest.raises(grpc.RpcError) as caught:
        stub.Upload(_upload_messages(payload, **kwargs))

    assert caught.value.code() == code
    assert message in caught.value.details()


def test_upload_rejects_wrong_vector_length(served):
    federation, stub = served
    _publish(federation, length=5)
    payload = np.array([1, 2, 3, 4], dtype="<f8").tobytes()

    with pytest.raises(grpc.RpcError) as caught:
        stub.Upload(_upload_messages(payload))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "task train-1 takes 40 bytes" in caught.value.details()


def test_upload_without_header_is_invalid(served):
    _, stub = served

    with pytest.raises(grpc.RpcError) as caught:
        stub.Upload(iter([pb.UploadChunk(data=b"abc")]))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must start with its header" in caught.value.details()


def test_upload_rejects_more_chunks_than_header(served):
    federation, stub = served
    _publish(federation)
    payload = np.array([1, 2, 3, 4], dtype="<f8").tobytes()

    with pytest.raises(grpc.RpcError) as caught:
        stub.Upload(_upload_messages(payload, count=1))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than the 1 chunks" in caught.value.details()


def test_upload_for_other_domain_task_checked_before_data(served):
    federation, stub = served
    _publish(federation)
    payload = np.array([1, 2, 3, 4], dtype="<f8").tobytes()

    with pytest.raises(grpc.RpcError) as caught:
        stub.Upload(_upload_messages(payload, task_id="train-9"))

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_upload_allows_one_stream_per_domain():
    import threading
    import time

    config = CoordinatorConfig(
        run_id="run", domains=("a",), tls=TLSConfig(insecure=True)
    )
    federation = Federation(config)
    servicer = CoordinatorServicer(federation, insecure=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_CoordinatorServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.CoordinatorStub(channel)
    stub.Join(
        pb.JoinRequest(domain="a", protocol_version=PROTOCOL_VERSION, stats=STATS)
    )
    _publish(federation)
    payload = np.array([1, 2, 3, 4], dtype="<f8").tobytes()
    release = threading.Event()

    def stalled():
        messages = _upload_messages(payload)
        yield next(messages)
        yield next(messages)
        release.wait(10)
        yield from messages

    try:
        first = stub.Upload.future(stalled())
        deadline = time.monotonic() + 10
        while not servicer._uploading and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Upload(_upload_messages(payload))
        release.set()
        result = first.result(timeout=10)
    finally:
        release.set()
        channel.close()
        server.stop(grace=None)

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "already has an upload in progress" in caught.value.details()
    assert result.received_bytes == 32


def test_servicer_counts_rejections_and_bytes(served):
    federation, stub = served
    _publish(federation)
    registry = federation.metrics.registry

    with pytest.raises(grpc.RpcError):
        stub.GetTask(pb.GetTaskRequest(domain="a", run_id="other"))
    with pytest.raises(grpc.RpcError):
        stub.Join(
            pb.JoinRequest(domain="x", protocol_version=PROTOCOL_VERSION, stats=STATS)
        )
    assemble_tensor_chunks(
        stub.Download(pb.DownloadRequest(domain="a", run_id="run", task_id="train-1"))
    )
    payload = np.arange(4, dtype="<f8").tobytes()
    stub.Upload(_upload_messages(payload))

    rejected = "fedcdr_rejected_requests_total"
    assert registry.get_sample_value(rejected, {"code": "INVALID_ARGUMENT"}) == 1
    assert registry.get_sample_value(rejected, {"code": "PERMISSION_DENIED"}) == 1
    assert (
        registry.get_sample_value("fedcdr_sent_bytes_total", {"rpc": "Download"})
        == 300_000 * 4
    )
    assert registry.get_sample_value(
        "fedcdr_received_bytes_total", {"rpc": "Upload"}
    ) == len(payload)
