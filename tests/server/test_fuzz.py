"""Malformed and out-of-order requests against a real coordinator servicer.

Hypothesis sends at least 10,000 requests, spread over every RPC, to a gRPC
server on 127.0.0.1 port 0 whose round loop waits in a secure aggregation.
Each request must end with a response or one of the status codes that the
servicer maps protocol errors to, never UNKNOWN or INTERNAL (an unhandled
exception), and the server must still serve afterwards.
"""

import threading
from concurrent import futures

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.config import (
    CoordinatorConfig,
    ModelConfig,
    SecAggConfig,
    TimeoutConfig,
    TLSConfig,
    TrainConfig,
)
from common.pb import federation_pb2 as pb
from common.pb import federation_pb2_grpc as pb_grpc
from common.runconfig import PROTOCOL_VERSION
from server.errors import StopRequestedError
from server.federation import Federation
from server.rounds import RoundLoop
from server.servicer import CoordinatorServicer

REQUESTS = 10_000
# Requests per Hypothesis example; batches cut the per-example overhead.
BATCH = 20
DOMAINS = ("a", "b", "c")
EXPECTED_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ALREADY_EXISTS,
}


class _ShortPollFederation(Federation):
    """A Federation whose long polls return after 10 ms, to keep the test fast."""

    def next_task(self, domain, wait_s=0.01):
        return super().next_task(domain, wait_s)

    def secagg_stage(self, domain, task_id, stage, wait_s=0.01):
        return super().secagg_stage(domain, task_id, stage, wait_s)


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    config = CoordinatorConfig(
        run_id="fuzz",
        domains=DOMAINS,
        state_dir=tmp_path_factory.mktemp("fuzz"),
        tls=TLSConfig(insecure=True),
        timeouts=TimeoutConfig(join_s=60, round_s=600, stage_s=600),
        model=ModelConfig(
            hidden_size=16, n_layers=1, inner_size=32, n_subspaces=4, n_centroids=4
        ),
        train=TrainConfig(rounds=1, kmeans_iterations=1),
        secagg=SecAggConfig(mode="honest-but-curious"),
    )
    federation = _ShortPollFederation(config)
    for domain in DOMAINS:
        federation.join(domain, pb.DomainStats(n_users=5, n_items=9, n_interactions=40))
    loop = threading.Thread(target=_run_until_stopped, args=(config, federation))
    loop.start()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_CoordinatorServicer_to_server(
        CoordinatorServicer(federation, insecure=True), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield pb_grpc.CoordinatorStub(channel)
    channel.close()
    server.stop(grace=None)
    federation.request_stop()
    loop.join(30)


def _run_until_stopped(config, federation):
    try:
        RoundLoop(config, federation).run()
    except StopRequestedError:
        pass


names = st.one_of(
    st.sampled_from(["a", "b", "c", "", "x", "coordinator", "a" * 70]),
    st.text(max_size=12),
)
run_ids = st.one_of(st.sampled_from(["fuzz", ""]), st.text(max_size=12))
task_ids = st.one_of(
    st.sampled_from(["codebook-0", "codebook-1", "train-1", "finish", ""]),
    st.text(max_size=12),
)
blobs = st.binary(max_size=1200)
int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
uint32 = st.integers(0, 2**32 - 1)
uint64 = st.integers(0, 2**64 - 1)
floats = st.floats(allow_nan=True, allow_infinity=True)


def _advertisement():
    return st.builds(
        pb.KeyAdvertisement,
        domain=names,
        encryption_public=st.one_of(blobs, st.binary(min_size=32, max_size=32)),
        mask_public=st.one_of(blobs, st.binary(min_size=32, max_size=32)),
        signature=blobs,
        certificate_pem=blobs,
    )


def _shares():
    share = st.builds(pb.EncryptedShare, sender=names, receiver=names, ciphertext=blobs)
    return st.lists(share, max_size=5)


def _revealed():
    return st.lists(st.builds(pb.RevealedShare, owner=names, share=blobs), max_size=5)


def _metrics():
    values = st.dictionaries(st.text(max_size=8), floats, max_size=3)
    return st.builds(
        pb.RoundMetrics,
        round=int32,
        valid=values,
        test=values,
        valid_loss=floats,
        train_loss=floats,
    )


def _upload_chunks():
    header = st.builds(
        pb.UploadHeader,
        domain=names,
        run_id=run_ids,
        task_id=task_ids,
        encoding=st.sampled_from(["secagg-uint32-le", "float64-le", ""]),
        total_bytes=st.one_of(uint64, st.integers(0, 4096)),
        count=st.one_of(uint32, st.integers(0, 8)),
        sha256=st.binary(max_size=40),
    )
    chunk = st.one_of(
        st.builds(pb.UploadChunk, header=header),
        st.builds(pb.UploadChunk, data=st.binary(max_size=600)),
    )
    return st.lists(chunk, max_size=6)


# Each strategy draws (rpc name, request); Upload draws a list of chunks.
REQUEST_STRATEGIES = st.one_of(
    st.tuples(
        st.just("Join"),
        st.builds(
            pb.JoinRequest,
            domain=names,
            protocol_version=st.one_of(st.just(PROTOCOL_VERSION), int32),
            stats=st.builds(
                pb.DomainStats, n_users=int64, n_items=int64, n_interactions=int64
            ),
        ),
    ),
    st.tuples(
        st.just("GetTask"), st.builds(pb.GetTaskRequest, domain=names, run_id=run_ids)
    ),
    st.tuples(
        st.just("Download"),
        st.builds(pb.DownloadRequest, domain=names, run_id=run_ids, task_id=task_ids),
    ),
    st.tuples(st.just("Upload"), _upload_chunks()),
    st.tuples(
        st.just("ReportMetrics"),
        st.builds(
            pb.ReportMetricsRequest,
            domain=names,
            run_id=run_ids,
            model=st.sampled_from(["federated", "local_only", "", "other"]),
            rounds=st.lists(_metrics(), max_size=3),
            final=st.booleans(),
        ),
    ),
    st.tuples(
        st.just("AdvertiseKeys"),
        st.builds(
            pb.AdvertiseKeysRequest,
            domain=names,
            run_id=run_ids,
            task_id=task_ids,
            advertisement=_advertisement(),
        ),
    ),
    st.tuples(
        st.just("ShareKeys"),
        st.builds(
            pb.ShareKeysRequest,
            domain=names,
            run_id=run_ids,
            task_id=task_ids,
            shares=_shares(),
        ),
    ),
    st.tuples(
        st.just("ConsistencyCheck"),
        st.builds(
            pb.ConsistencyCheckRequest,
            domain=names,
            run_id=run_ids,
            task_id=task_ids,
            signature=blobs,
        ),
    ),
    st.tuples(
        st.just("Unmask"),
        st.builds(
            pb.UnmaskRequest,
            domain=names,
            run_id=run_ids,
            task_id=task_ids,
            self_mask_shares=_revealed(),
            mask_key_shares=_revealed(),
        ),
    ),
    st.tuples(
        st.just("GetSecAggStage"),
        st.builds(
            pb.GetSecAggStageRequest,
            domain=names,
            run_id=run_ids,
            task_id=task_ids,
            stage=st.integers(-3, 12),
        ),
    ),
)


def _send(stub, rpc: str, request) -> None:
    if rpc == "Upload":
        stub.Upload(iter(request), timeout=10)
    elif rpc == "Download":
        for _ in stub.Download(request, timeout=10):
            pass
    else:
        getattr(stub, rpc)(request, timeout=10)


def test_every_rpc_survives_malformed_requests(coordinator):
    sent = {"count": 0}
    unexpected = []

    @settings(
        max_examples=REQUESTS // BATCH,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(REQUEST_STRATEGIES, min_size=BATCH, max_size=BATCH))
    def send_batch(batch):
        for rpc, request in batch:
            sent["count"] += 1
            try:
                _send(coordinator, rpc, request)
            except grpc.RpcError as error:
                if error.code() not in EXPECTED_CODES:
                    unexpected.append((rpc, error.code(), error.details(), request))

    send_batch()

    assert sent["count"] >= REQUESTS
    assert unexpected[:3] == []
    still_serving = coordinator.GetTask(
        pb.GetTaskRequest(domain="a", run_id="fuzz"), timeout=10
    )
    assert still_serving.kind in (pb.TASK_KIND_WAIT, pb.TASK_KIND_CODEBOOK_MOMENTS)
