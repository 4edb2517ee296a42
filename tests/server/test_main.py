"""Command-line errors of `fedcdr-coordinator` exit with code 2 and a message."""

import logging
import socket

import pytest

from server.main import EXIT_USAGE, main


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "coordinator.toml"
    path.write_text('run_id = "r"\ndomains = ["a"]\nstate_dir = "state"\n')
    return path


def test_run_reports_occupied_port(config_file, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        address = f"127.0.0.1:{port}"

        with caplog.at_level(logging.ERROR):
            code = main(
                ["run", "--config", str(config_file), "--insecure", "--listen", address]
            )

    assert code == EXIT_USAGE
    assert f"cannot bind listen address '{address}'" in caplog.text


def test_run_rejects_invalid_domain_name(tmp_path, caplog):
    path = tmp_path / "coordinator.toml"
    path.write_text('run_id = "r"\ndomains = ["Bad Name"]\n[tls]\ninsecure = true\n')

    with caplog.at_level(logging.ERROR):
        code = main(["run", "--config", str(path)])

    assert code == EXIT_USAGE
    assert "invalid domain name in domains 'Bad Name'" in caplog.text


def test_run_rejects_state_dir_that_is_a_file(config_file, tmp_path, caplog):
    (tmp_path / "state").write_text("")

    with caplog.at_level(logging.ERROR):
        code = main(["run", "--config", str(config_file), "--insecure"])

    assert code == EXIT_USAGE
    assert "is a file; set it to a folder" in caplog.text


def test_certs_rejects_days_out_of_range(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        code = main(
            [
                "certs",
                "--out",
                str(tmp_path / "c"),
                "--domains",
                "a",
                "--days",
                "100000",
            ]
        )

    assert code == EXIT_USAGE
    assert "days must be an integer from 1 to 3650" in caplog.text


def test_run_serves_health_then_aborts_without_domains(tmp_path):
    import threading
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from server.main import EXIT_ABORTED, SERVICE_NAME

    path = tmp_path / "coordinator.toml"
    path.write_text(
        'run_id = "r"\ndomains = ["a"]\nlisten = "127.0.0.1:0"\n'
        "[tls]\ninsecure = true\n[timeouts]\njoin_s = 15\n"
    )
    address_file = tmp_path / "address"
    result = {}
    runner = threading.Thread(
        target=lambda: result.update(
            code=main(["run", "--config", str(path), "--port-file", str(address_file)])
        )
    )
    runner.start()
    deadline = time.monotonic() + 10
    while not address_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)

    with grpc.insecure_channel(address_file.read_text().strip()) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
        )
    runner.join(60)

    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert result["code"] == EXIT_ABORTED
