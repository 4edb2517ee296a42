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


def _run_config(tmp_path, domains='["a", "b"]'):
    path = tmp_path / "coordinator.toml"
    path.write_text(
        f'run_id = "r"\ndomains = {domains}\nlisten = "127.0.0.1:0"\n'
        'state_dir = "state"\n[tls]\ninsecure = true\n[timeouts]\njoin_s = 60\n'
    )
    return path


def _commit_round_one(store, tmp_path):
    """Commit round 1 with domain a's masked input and a placeholder checkpoint."""
    store.begin_task("train-1", "train-1", "round", 1, 1, 1, frozenset("a"))
    store.record_stage("train-1", "MASKED_INPUT", {"a"})
    checkpoint = tmp_path / "state" / "checkpoints" / "round-0001.safetensors"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    store.commit("train-1", "round", 1, checkpoint, {"a"})
    return checkpoint


def test_run_rejects_corrupt_store(tmp_path, caplog):
    from server.main import EXIT_STATE

    path = _run_config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "run.sqlite").write_bytes(b"garbage" * 100)

    with caplog.at_level(logging.ERROR):
        code = main(["run", "--config", str(path)])

    assert code == EXIT_STATE
    assert "is corrupt or not a fedcdr store" in caplog.text


def test_run_rejects_missing_checkpoint(tmp_path, caplog):
    from common.config import CoordinatorConfig, load_toml
    from server.main import EXIT_STATE
    from server.store import RunStore

    path = _run_config(tmp_path)
    store = RunStore.open(load_toml(CoordinatorConfig, path))
    checkpoint = _commit_round_one(store, tmp_path)
    store.close()
    checkpoint.unlink()

    with caplog.at_level(logging.ERROR):
        code = main(["run", "--config", str(path)])

    assert code == EXIT_STATE
    assert "round-0001.safetensors of committed train-1 is missing" in caplog.text


def test_run_of_finished_run_exits_at_once(tmp_path, caplog):
    from common.config import CoordinatorConfig, load_toml
    from server.main import EXIT_OK
    from server.store import DONE, RunStore

    path = _run_config(tmp_path)
    store = RunStore.open(load_toml(CoordinatorConfig, path))
    store.set_status(DONE)
    store.close()

    with caplog.at_level(logging.WARNING):
        code = main(["run", "--config", str(path)])

    assert code == EXIT_OK
    assert "run=r finished earlier" in caplog.text


def test_status_prints_rounds_and_metrics(tmp_path, capsys):
    from common.config import CoordinatorConfig, load_toml
    from common.pb import federation_pb2 as pb
    from server.store import RunStore

    path = _run_config(tmp_path)
    store = RunStore.open(load_toml(CoordinatorConfig, path))
    store.begin_start()
    store.record_join("a", pb.DomainStats(n_users=4, n_items=9, n_interactions=30))
    _commit_round_one(store, tmp_path)
    store.begin_task("train-2", "train-2", "round", 2, 1, 2, frozenset("a"))
    metrics = pb.RoundMetrics(round=1, valid={"ndcg@10": 0.3125})
    store.record_metrics("a", "federated", [metrics], final=False)
    store.close()

    code = main(["status", "--config", str(path)])
    output = capsys.readouterr().out

    assert code == 0
    assert "run r: running, started 1 time(s)" in output
    assert "a: 4 users, 9 items, 30 interactions" in output
    assert "train-1" in output
    assert "committed" in output
    assert "MASKED_INPUT=1" in output
    assert "in flight" in output
    assert "committed: codebook steps none, rounds 1" in output
    assert "0.3125" in output


def test_status_without_store_exits_with_state_code(tmp_path, caplog):
    from server.main import EXIT_STATE

    path = _run_config(tmp_path)

    with caplog.at_level(logging.ERROR):
        code = main(["status", "--config", str(path)])

    assert code == EXIT_STATE
    assert "not found" in caplog.text


def test_sigterm_turns_health_not_serving_and_exits(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from common.pb import federation_pb2 as pb
    from common.pb import federation_pb2_grpc as pb_grpc
    from common.runconfig import PROTOCOL_VERSION
    from server.main import EXIT_STOPPED, SERVICE_NAME

    path = _run_config(tmp_path)
    address_file = tmp_path / "address"
    bin_dir = Path(sys.executable).parent
    process = subprocess.Popen(
        [
            bin_dir / "fedcdr-coordinator",
            "run",
            "--config",
            path,
            "--port-file",
            address_file,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not address_file.exists():
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the coordinator did not start"
            time.sleep(0.1)
        with grpc.insecure_channel(address_file.read_text().strip()) as channel:
            pb_grpc.CoordinatorStub(channel).Join(
                pb.JoinRequest(
                    domain="a",
                    protocol_version=PROTOCOL_VERSION,
                    stats=pb.DomainStats(n_users=3, n_items=5, n_interactions=9),
                ),
                timeout=10,
            )
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=30
            )
            before = next(watch).status

            process.send_signal(signal.SIGTERM)
            after = next(watch).status
        code = process.wait(30)
        log = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()

    status = subprocess.run(
        [bin_dir / "fedcdr-coordinator", "status", "--config", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert before == health_pb2.HealthCheckResponse.SERVING
    assert after == health_pb2.HealthCheckResponse.NOT_SERVING
    assert code == EXIT_STOPPED, log
    assert "received SIGTERM" in log
    assert "run r: running" in status.stdout
    assert "stopped while waiting for domains" in status.stdout
    assert "a: 3 users, 5 items, 9 interactions" in status.stdout
