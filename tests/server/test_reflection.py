"""gRPC server reflection on the coordinator: served only when turned on."""

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from common.config import CoordinatorConfig, TLSConfig
from server.federation import Federation
from server.main import SERVICE_NAME, _load_config, _start_server, build_parser


def _list_services(address: str) -> list[str]:
    """List the services through reflection; raise grpc.RpcError on failure."""
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = stub.ServerReflectionInfo(iter([request]), timeout=10)
        response = next(iter(responses))
    return [service.name for service in response.list_services_response.service]


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(reflection: bool) -> str:
        config = CoordinatorConfig(
            run_id="reflect",
            domains=("a",),
            listen="127.0.0.1:0",
            state_dir=tmp_path,
            tls=TLSConfig(insecure=True),
            reflection=reflection,
        )
        server, _, address = _start_server(config, Federation(config), None)
        servers.append(server)
        return address

    yield start
    for server in servers:
        server.stop(grace=None)


def test_reflection_lists_services_when_on(serve):
    services = _list_services(serve(reflection=True))

    assert SERVICE_NAME in services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services


def test_reflection_unimplemented_when_off(serve):
    address = serve(reflection=False)

    with pytest.raises(grpc.RpcError) as raised:
        _list_services(address)

    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_off_by_default():
    config = CoordinatorConfig(run_id="r", domains=("a",), tls=TLSConfig(insecure=True))

    assert config.reflection is False


def test_reflection_flag_overrides_config(tmp_path):
    path = tmp_path / "coordinator.toml"
    path.write_text('run_id = "r"\ndomains = ["a"]\nreflection = false\n')
    arguments = ["run", "--config", str(path), "--insecure"]

    plain = _load_config(build_parser().parse_args(arguments))
    flagged = _load_config(build_parser().parse_args([*arguments, "--reflection"]))

    assert plain.reflection is False
    assert flagged.reflection is True
