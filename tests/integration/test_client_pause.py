"""A client paused with SIGSTOP past a round's deadline, then resumed with SIGCONT.

Three domains run four rounds with secure aggregation and short deadlines.
Client d2 stops itself with SIGSTOP right before it uploads its masked input
of round 1. The coordinator must drop it after timeouts.round_s, finish the
round with the other two, and go on. After SIGCONT, d2's late upload is
rejected as stale, d2 logs that the task is over, takes part in a later
round and exits 0 with the others.
"""

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_coordinator_restart import (
    _free_port,
    _start_coordinator,
    _wait_for_marker,
)
from tests.integration.test_federated_run import _client_config, _write_domain
from tests.integration.test_secagg_dropouts import _start_client

BIN = Path(sys.executable).parent
DOMAINS = ("d0", "d1", "d2")
PAUSED = "d2"
ROUNDS = 4
ROUND_S = 6
STAGE_S = 4


def _coordinator_config(path: Path, certs: Path) -> None:
    path.write_text(
        f'run_id = "pause"\ndomains = {json.dumps(list(DOMAINS))}\n'
        'listen = "127.0.0.1:0"\nstate_dir = "state"\nmin_domains = 2\n'
        "[tls]\n"
        f'ca = "{certs}/coordinator/ca.pem"\n'
        f'cert = "{certs}/coordinator/cert.pem"\n'
        f'key = "{certs}/coordinator/key.pem"\n'
        f"[timeouts]\njoin_s = 300\nround_s = {ROUND_S}\nstage_s = {STAGE_S}\n"
        "report_s = 120\n"
        f"[train]\nrounds = {ROUNDS}\nlocal_epochs = 1\nkmeans_iterations = 1\n"
        "batch_size = 16\nlearning_rate = 0.005\n"
        "[model]\nhidden_size = 16\nn_layers = 1\ninner_size = 32\n"
        "n_subspaces = 4\nn_centroids = 8\nn_prompt_words = 2\n"
        '[secagg]\nmode = "honest-but-curious"\nclip = 0.5\n'
    )


def _process_state(pid: int) -> str:
    """Return the one-letter state of ``pid`` from /proc (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def _round_commits(store: Path) -> dict[int, list[str]]:
    connection = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
    try:
        rows = connection.execute(
            "SELECT number, survivors FROM commits WHERE kind = 'round'"
        ).fetchall()
    finally:
        connection.close()
    return {number: survivors.split(",") for number, survivors in rows}


def _wait_for_round(store: Path, number: int, process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, f"coordinator exited with {process.returncode}"
        if store.exists() and number in _round_commits(store):
            return
        assert time.monotonic() < deadline, f"round {number} was not committed"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def paused_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pause")
    for seed, domain in enumerate(DOMAINS):
        _write_domain(root / "data", domain, seed)
    certs = root / "certs"
    subprocess.run(
        [BIN / "fedcdr-coordinator", "certs", "--out", certs]
        + ["--domains", ",".join(DOMAINS)],
        check=True,
        capture_output=True,
    )
    (root / "coordinator").mkdir()
    config = root / "coordinator" / "coordinator.toml"
    _coordinator_config(config, certs)
    store = root / "coordinator" / "state" / "run.sqlite"
    result = {"root": root, "store": store}
    coordinator, clients = None, {}
    try:
        coordinator, address = _start_coordinator(root, config, _free_port(), None)
        for domain in DOMAINS:
            _client_config(
                root / "clients" / domain / "client.toml",
                domain,
                root / "data" / domain,
                certs / "domains" / domain,
            )
            pause = "train-1.mask" if domain == PAUSED else None
            clients[domain] = _start_client(root, domain, address, None, pause)

        marker = root / "markers" / PAUSED / "train-1.mask.paused"
        _wait_for_marker(marker, coordinator, 120)
        paused_at = time.monotonic()
        _wait_for_round(store, 1, coordinator, 60)
        result["round_1_wait_s"] = time.monotonic() - paused_at
        result["state_at_commit"] = _process_state(clients[PAUSED].pid)

        clients[PAUSED].send_signal(signal.SIGCONT)
        result["coordinator_code"] = coordinator.wait(120)
        result["client_codes"] = {d: p.wait(60) for d, p in clients.items()}
    finally:
        for process in [coordinator, *clients.values()]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
    result["commits"] = _round_commits(store)
    result["coordinator_log"] = (root / "coordinator.log").read_text()
    result["paused_log"] = (root / "clients" / PAUSED / "client.log").read_text()
    return result


def test_paused_client_stopped_until_commit(paused_run):
    assert paused_run["state_at_commit"] == "T"


def test_round_commits_without_paused_client(paused_run):
    assert paused_run["commits"][1] == ["d0", "d1"]


def test_coordinator_waits_only_deadlines(paused_run):
    # The masked-input deadline, then the consistency and unmask stages of
    # the two others, plus start-up slack for a loaded machine.
    assert paused_run["round_1_wait_s"] < ROUND_S + 2 * STAGE_S + 10


def test_run_finishes_after_pause(paused_run):
    log = paused_run["coordinator_log"]

    assert paused_run["coordinator_code"] == 0, log[-3000:]
    assert paused_run["client_codes"] == {d: 0 for d in DOMAINS}
    assert sorted(paused_run["commits"]) == list(range(1, ROUNDS + 1))


def test_resumed_client_rejoins_later_round(paused_run):
    later = [n for n, survivors in paused_run["commits"].items() if PAUSED in survivors]

    assert later
    assert min(later) > 1


def test_resumed_client_drops_stale_upload(paused_run):
    log = paused_run["paused_log"]

    assert "task=train-1 is over, waiting for the next one" in log
    assert "is back and takes part from the next task" in paused_run["coordinator_log"]
