"""The recommendation service: same results as the command, mutual TLS, bad requests."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.main import main
from client.recommend import Recommender, open_recommender
from client.serve import MAX_K, SERVICE_NAME, RecommendationServer, start_server
from common import tls
from common.certs import CertificateSet, create_certificates
from common.config import ServeConfig, TLSConfig
from common.pb import inference_pb2 as pb
from common.pb import inference_pb2_grpc as pb_grpc
from tests.support.tinymodel import TinyDomain, write_client_config


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    return create_certificates(tmp_path_factory.mktemp("serve") / "certs", ["app"])


def _serve_tls(certs: CertificateSet) -> TLSConfig:
    folder = certs.coordinator_dir
    return TLSConfig(
        ca=folder / "ca.pem", cert=folder / "cert.pem", key=folder / "key.pem"
    )


def _caller_credentials(certs: CertificateSet) -> grpc.ChannelCredentials:
    folder = certs.domain_dirs["app"]
    return tls.channel_credentials(
        folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    )


@pytest.fixture(scope="module")
def recommender(tiny_domain: TinyDomain) -> Recommender:
    return open_recommender(
        tiny_domain.model_file, tiny_domain.data_dir, tiny_domain.work_dir / "cache"
    )


@pytest.fixture(scope="module")
def server(recommender, certs) -> Iterator[RecommendationServer]:
    config = ServeConfig(listen="127.0.0.1:0", tls=_serve_tls(certs), workers=2)
    running = start_server(recommender, config)
    yield running
    running.stop(grace_s=0)


@pytest.fixture(scope="module")
def stub(server, certs) -> Iterator[pb_grpc.RecommenderStub]:
    with grpc.secure_channel(server.address, _caller_credentials(certs)) as channel:
        yield pb_grpc.RecommenderStub(channel)


def _as_command_json(response: pb.RecommendResponse) -> dict:
    """Convert a response to the JSON shape that `recommend --format json` prints."""
    return {
        "domain": response.domain,
        "user_id": response.user_id or None,
        "history": list(response.history),
        "items": [
            {"rank": i.rank, "item_id": i.item_id, "text": i.text, "score": i.score}
            for i in response.items
        ],
    }


def _command_json(domain: TinyDomain, capsys, *arguments: str) -> dict:
    code = main(
        ["recommend", "--config", str(domain.config_file), "--format", "json"]
        + list(arguments)
    )
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_service_matches_command_for_user(tiny_domain, stub, capsys):
    response = stub.Recommend(pb.RecommendRequest(user_id="u5", k=4), timeout=10)

    assert _as_command_json(response) == _command_json(
        tiny_domain, capsys, "--user", "u5", "-k", "4"
    )


def test_service_matches_command_for_history(tiny_domain, stub, capsys):
    request = pb.RecommendRequest(
        history=pb.ItemHistory(item_ids=["103", "110"]), include_seen=True
    )

    response = stub.Recommend(request, timeout=10)

    assert len(response.items) == 10
    assert _as_command_json(response) == _command_json(
        tiny_domain, capsys, "--history", "103,110", "--include-seen"
    )


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (pb.RecommendRequest(), grpc.StatusCode.INVALID_ARGUMENT, "neither user_id"),
        (
            pb.RecommendRequest(user_id="nobody"),
            grpc.StatusCode.NOT_FOUND,
            "'nobody' is not a user",
        ),
        (
            pb.RecommendRequest(history=pb.ItemHistory(item_ids=["101", "nope"])),
            grpc.StatusCode.NOT_FOUND,
            "item 'nope' of the history",
        ),
        (
            pb.RecommendRequest(history=pb.ItemHistory()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "history is empty",
        ),
        (
            pb.RecommendRequest(user_id="u1", k=MAX_K + 1),
            grpc.StatusCode.INVALID_ARGUMENT,
            f"above the maximum of {MAX_K}",
        ),
    ],
)
def test_service_rejects_bad_request_and_stays_up(stub, request_, code, message):
    with pytest.raises(grpc.RpcError) as raised:
        stub.Recommend(request_, timeout=10)

    assert raised.value.code() == code
    assert message in raised.value.details()
    assert len(stub.Recommend(pb.RecommendRequest(user_id="u1"), timeout=10).items)


def test_service_rejects_undecodable_request(server, certs, stub):
    with grpc.secure_channel(server.address, _caller_credentials(certs)) as channel:
        call = channel.unary_unary(
            f"/{SERVICE_NAME}/Recommend",
            request_serializer=lambda raw: raw,
            response_deserializer=pb.RecommendResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as raised:
            call(b"\xff\xff\xff", timeout=10)

    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert len(stub.Recommend(pb.RecommendRequest(user_id="u1"), timeout=10).items)


def test_service_rejects_oversized_request(stub):
    history = pb.ItemHistory(item_ids=["101"] * 300_000)

    with pytest.raises(grpc.RpcError) as raised:
        stub.Recommend(pb.RecommendRequest(history=history), timeout=10)

    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(stub.Recommend(pb.RecommendRequest(user_id="u1"), timeout=10).items)


def test_service_health_serving(server, certs):
    with grpc.secure_channel(server.address, _caller_credentials(certs)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = health.Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10
        )

    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_service_rejects_client_without_certificate(server, certs):
    ca = (certs.coordinator_dir / "ca.pem").read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)

    with grpc.secure_channel(server.address, credentials) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Recommend(pb.RecommendRequest(user_id="u1"), timeout=10)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_service_rejects_certificate_from_other_ca(server, tmp_path):
    other = create_certificates(tmp_path / "other", ["app"])
    folder = other.domain_dirs["app"]
    credentials = tls.channel_credentials(
        folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    )

    with grpc.secure_channel(server.address, credentials) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Recommend(pb.RecommendRequest(user_id="u1"), timeout=10)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_serve_process_answers_and_stops_on_sigterm(
    tiny_domain, recommender, certs, tmp_path
):
    folder = certs.coordinator_dir
    config = tmp_path / "client.toml"
    write_client_config(
        config,
        tiny_domain.data_dir,
        tiny_domain.work_dir,
        'listen = "127.0.0.1:0"\n'
        f'tls = {{ ca = "{folder / "ca.pem"}", cert = "{folder / "cert.pem"}", '
        f'key = "{folder / "key.pem"}" }}\n',
    )
    port_file = tmp_path / "address"
    process = subprocess.Popen(
        [sys.executable, "-m", "client.main", "serve", "--config", str(config)]
        + ["--port-file", str(port_file)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "serve did not start in 120 s"
            time.sleep(0.2)
        address = port_file.read_text().strip()
        with grpc.secure_channel(address, _caller_credentials(certs)) as channel:
            response = pb_grpc.RecommenderStub(channel).Recommend(
                pb.RecommendRequest(user_id="u9", k=3), timeout=30
            )
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    log = process.stderr.read()
    expected = recommender.for_user("u9", 3)
    assert [i.item_id for i in response.items] == [i.item_id for i in expected.items]
    assert code == 0, log
    assert "received SIGTERM: stopping the service" in log
    assert "service stopped" in log


def test_serve_without_tls_settings_is_usage_error(tiny_domain, tmp_path, caplog):
    config = tmp_path / "client.toml"
    write_client_config(config, tiny_domain.data_dir, tiny_domain.work_dir, "")

    code = main(["serve", "--config", str(config)])

    assert code == 2
    assert "serve.tls.ca is missing" in caplog.text
