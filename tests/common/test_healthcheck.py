"""`fedcdr-healthcheck` against a real coordinator process over mutual TLS."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.certs import create_certificates

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("health")
    certs = create_certificates(root / "certs", ["books", "monitor"]).root
    strangers = create_certificates(root / "strangers", ["monitor"]).root
    config = root / "coordinator.toml"
    config.write_text(
        'run_id = "health"\ndomains = ["books"]\nlisten = "127.0.0.1:0"\n'
        'state_dir = "state"\n[timeouts]\njoin_s = 120\n[tls]\n'
        'ca = "certs/coordinator/ca.pem"\ncert = "certs/coordinator/cert.pem"\n'
        'key = "certs/coordinator/key.pem"\n'
    )
    port_file = root / "address"
    process = subprocess.Popen(
        [
            BIN / "fedcdr-coordinator",
            "run",
            "--config",
            config,
            "--port-file",
            port_file,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, f"coordinator exited {process.returncode}"
            assert time.monotonic() < deadline, "coordinator did not start in 60 s"
            time.sleep(0.1)
        yield {
            "address": port_file.read_text().strip(),
            "monitor": certs / "domains" / "monitor",
            "stranger": strangers / "domains" / "monitor",
        }
    finally:
        process.kill()
        process.wait(timeout=30)


def _healthcheck(
    address: str, bundle: Path, *extra: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            BIN / "fedcdr-healthcheck",
            "--address",
            address,
            "--ca",
            bundle / "ca.pem",
            "--cert",
            bundle / "cert.pem",
            "--key",
            bundle / "key.pem",
            "--timeout",
            "5",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_healthcheck_reports_serving(coordinator: dict) -> None:
    result = _healthcheck(coordinator["address"], coordinator["monitor"])

    assert result.returncode == 0, result.stderr
    assert "fedcdr.v1.Coordinator: SERVING" in result.stdout


def test_healthcheck_unknown_service_fails(coordinator: dict) -> None:
    result = _healthcheck(
        coordinator["address"], coordinator["monitor"], "--service", "nope"
    )

    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr


def test_healthcheck_certificate_from_other_ca_fails(coordinator: dict) -> None:
    result = _healthcheck(coordinator["address"], coordinator["stranger"])

    assert result.returncode == 1
    assert "did not answer the health check" in result.stderr


def test_healthcheck_without_client_certificate_is_usage_error(
    coordinator: dict,
) -> None:
    result = subprocess.run(
        [BIN / "fedcdr-healthcheck", "--ca", coordinator["monitor"] / "ca.pem"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "--cert and --key are required" in result.stderr
