"""A running coordinator process reloads its revoked serials on SIGHUP.

The coordinator serves over mutual TLS and waits for domains. Domain books
joins; then its certificate's serial is added to the config file and the
process receives SIGHUP. The same process must then reject books with
PERMISSION_DENIED, keep the revocation when a later SIGHUP finds an invalid
config, and still stop cleanly on SIGTERM.
"""

import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from common.certs import create_certificates
from tests.deploy.tinyfed import LogWatcher
from tests.integration.test_federated_run import _wait_for
from tests.server.test_revocation import _domain_credentials, _join, _serial

BIN = Path(sys.executable).parent
EXIT_STOPPED = 5


def _write_config(path: Path, coordinator: Path, serials: list[str]) -> None:
    quoted = ", ".join(f'"{serial}"' for serial in serials)
    path.write_text(
        'run_id = "sighup"\ndomains = ["books", "office"]\n'
        'listen = "127.0.0.1:0"\nstate_dir = "state"\n'
        "[tls]\n"
        f'ca = "{coordinator}/ca.pem"\n'
        f'cert = "{coordinator}/cert.pem"\n'
        f'key = "{coordinator}/key.pem"\n'
        "[timeouts]\njoin_s = 300\n"
        f"[revocation]\nserials = [{quoted}]\n"
    )


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory):
    root = tmp_path_factory.mktemp("sighup")
    cert_set = create_certificates(root / "certs", ["books", "office"])
    config = root / "coordinator.toml"
    _write_config(config, cert_set.coordinator_dir, [])
    address_file = root / "coordinator.address"
    log = LogWatcher(root / "coordinator.log")
    with log.path.open("wb") as output:
        process = subprocess.Popen(
            [BIN / "fedcdr-coordinator", "run", "--config", config]
            + ["--port-file", address_file],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    result = {"pid": process.pid}
    credentials = _domain_credentials(cert_set, "books")

    def alive() -> bool:
        return process.poll() is None

    try:
        port = int(_wait_for(address_file, process, 120).rsplit(":", 1)[1])
        result["before"] = _join(port, credentials)

        serial = f"{_serial(cert_set, 'books'):x}"
        _write_config(config, cert_set.coordinator_dir, [serial])
        process.send_signal(signal.SIGHUP)
        log.wait_for(r"revocations reloaded: 1 serials from the config", 30, alive)
        result["after"] = _join(port, credentials)
        office = _domain_credentials(cert_set, "office")
        result["office"] = _join(port, office, domain="office")

        config.write_text(config.read_text().replace(serial, "not-a-serial"))
        process.send_signal(signal.SIGHUP)
        log.wait_for(r"SIGHUP: revocations not reloaded", 30, alive)
        result["after_invalid"] = _join(port, credentials)

        result["alive_before_stop"] = alive()
        process.send_signal(signal.SIGTERM)
        result["exit_code"] = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    result["log"] = log.text()
    return result


def test_joins_before_revocation(reloaded):
    assert reloaded["before"] == (grpc.StatusCode.OK, "")


def test_sighup_revokes_without_restart(reloaded):
    code, details = reloaded["after"]

    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "is revoked" in details
    assert reloaded["alive_before_stop"]
    assert reloaded["log"].count("serving on") == 1


def test_other_domain_unaffected(reloaded):
    assert reloaded["office"] == (grpc.StatusCode.OK, "")


def test_invalid_reload_keeps_revocation(reloaded):
    code, _ = reloaded["after_invalid"]

    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "invalid certificate serial 'not-a-serial'" in reloaded["log"]


def test_stops_cleanly_after_reloads(reloaded):
    assert reloaded["exit_code"] == EXIT_STOPPED, reloaded["log"][-3000:]
