"""The coordinator killed with SIGKILL at several points of a run, then restarted.

Three domains run three rounds with secure aggregation. The coordinator is
killed four times: while a k-means step shares keys, after a round's masked
inputs were accepted, after a round's checkpoint was written but before its
commit, and right after a commit. Each time it restarts with the same config
and the clients, which keep running, rejoin on their own. The run must finish,
keep every committed step and round, and apply each round exactly once: a
round's model change must equal the weighted mean of the plain updates of the
attempt that committed it.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from common.config import CoordinatorConfig, load_toml
from server.rounds import initial_global_weights
from tests.integration.test_federated_run import (
    _client_config,
    _wait_for,
    _write_domain,
)
from tests.integration.test_secagg_dropouts import _start_client

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DOMAINS = ("d0", "d1", "d2")
ROUNDS = 3
CLIP = 0.5
LEVELS = 2**16
# Where each start of the coordinator is killed, in order; the last start
# runs to the end.
KILL_POINTS = (
    "codebook-1:SHARE_KEYS",
    "train-1:MASKED_INPUT",
    "train-2:checkpoint",
    "train-3:committed",
)


def _coordinator_config(path: Path, certs: Path) -> None:
    path.write_text(
        f'run_id = "restarts"\ndomains = {json.dumps(list(DOMAINS))}\n'
        'listen = "127.0.0.1:0"\nstate_dir = "state"\n'
        "[tls]\n"
        f'ca = "{certs}/coordinator/ca.pem"\n'
        f'cert = "{certs}/coordinator/cert.pem"\n'
        f'key = "{certs}/coordinator/key.pem"\n'
        "[timeouts]\njoin_s = 120\nround_s = 60\nstage_s = 40\nreport_s = 120\n"
        f"[train]\nrounds = {ROUNDS}\nlocal_epochs = 1\nkmeans_iterations = 1\n"
        "batch_size = 16\nlearning_rate = 0.005\n"
        "[model]\nhidden_size = 16\nn_layers = 1\ninner_size = 32\n"
        "n_subspaces = 4\nn_centroids = 8\nn_prompt_words = 2\n"
        f"[secagg]\nclip = {CLIP}\n"
    )


def _start_coordinator(root: Path, config: Path, port: int, hold: str | None):
    env = dict(os.environ)
    env.pop("FEDCDR_TEST_COORDINATOR_HOLD", None)
    if hold:
        env["FEDCDR_TEST_COORDINATOR_HOLD"] = hold
    address_file = root / "coordinator.address"
    address_file.unlink(missing_ok=True)
    log = open(root / "coordinator.log", "a")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            HERE / "held_coordinator.py",
            root / "markers" / "coordinator",
            "run",
            "--config",
            config,
            "--listen",
            f"127.0.0.1:{port}",
            "--port-file",
            address_file,
        ],
        cwd=config.parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, _wait_for(address_file, process, 60)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_marker(path: Path, process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, f"coordinator exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        time.sleep(0.1)


def run_with_kills(root: Path, kill_points: tuple[str, ...]) -> dict:
    """Run the federation in ``root``, killing the coordinator with SIGKILL at
    each of ``kill_points`` in turn and starting it again with the same config.
    """
    data = root / "data"
    for seed, domain in enumerate(DOMAINS):
        _write_domain(data, domain, seed)
    certs = root / "certs"
    subprocess.run(
        [
            BIN / "fedcdr-coordinator",
            "certs",
            "--out",
            certs,
            "--domains",
            ",".join(DOMAINS),
        ],
        check=True,
        capture_output=True,
    )
    (root / "coordinator").mkdir()
    config_path = root / "coordinator" / "coordinator.toml"
    _coordinator_config(config_path, certs)
    # Clients dial one fixed port, so each restart listens where they retry.
    port = _free_port()
    clients = {}
    kill_codes = []
    coordinator = None
    started = time.monotonic()
    try:
        coordinator, address = _start_coordinator(
            root, config_path, port, kill_points[0] if kill_points else None
        )
        for domain in DOMAINS:
            _client_config(
                root / "clients" / domain / "client.toml",
                domain,
                data / domain,
                certs / "domains" / domain,
            )
            clients[domain] = _start_client(root, domain, address, hold=None)
        for index, point in enumerate(kill_points):
            marker = (
                root / "markers" / "coordinator" / (point.replace(":", ".") + ".held")
            )
            _wait_for_marker(marker, coordinator, 120)
            coordinator.send_signal(signal.SIGKILL)
            kill_codes.append(coordinator.wait(30))
            following = kill_points[index + 1] if index + 1 < len(kill_points) else None
            coordinator, _ = _start_coordinator(root, config_path, port, following)
        coordinator.wait(180)
        for process in clients.values():
            process.wait(60)
    finally:
        for process in [coordinator, *clients.values()]:
            if process is not None and process.poll() is None:
                process.kill()
    return {
        "root": root,
        "config": load_toml(CoordinatorConfig, config_path),
        "coordinator": coordinator,
        "log": (root / "coordinator.log").read_text(),
        "clients": clients,
        "kill_codes": kill_codes,
        "seconds": time.monotonic() - started,
        "store": root / "coordinator" / "state" / "run.sqlite",
    }


@pytest.fixture(scope="module")
def restarted_run(tmp_path_factory):
    return run_with_kills(tmp_path_factory.mktemp("restarts"), KILL_POINTS)


def _query(store: Path, sql: str) -> list:
    connection = sqlite3.connect(store)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def test_every_start_killed_at_its_point(restarted_run):
    assert restarted_run["kill_codes"] == [-signal.SIGKILL] * len(KILL_POINTS)


def test_run_finishes_after_restarts(restarted_run):
    root = restarted_run["root"]
    assert restarted_run["coordinator"].returncode == 0, restarted_run["log"][-4000:]
    for domain, process in restarted_run["clients"].items():
        log = (root / "clients" / domain / "client.log").read_text()
        assert process.returncode == 0, log[-4000:]


def test_every_commit_kept_once(restarted_run):
    commits = _query(
        restarted_run["store"], "SELECT kind, number FROM commits ORDER BY kind, number"
    )

    assert commits == [("codebook", 0), ("codebook", 1)] + [
        ("round", r) for r in range(1, ROUNDS + 1)
    ]


def test_interrupted_attempts_restart_with_new_task_ids(restarted_run):
    tasks = dict(_query(restarted_run["store"], "SELECT task_id, outcome FROM tasks"))

    # Start 1 is killed in codebook-1, start 2 in train-1, start 3 in train-2.
    assert tasks["codebook-1"] == "interrupted"
    assert tasks["codebook-1.2"] == "committed"
    assert tasks["train-1.2"] == "interrupted"
    assert tasks["train-1.3"] == "committed"
    assert tasks["train-2.3"] == "interrupted"
    assert tasks["train-2.4"] == "committed"
    assert tasks["train-3.4"] == "committed"
    assert tasks["finish.5"] == "committed"
    assert "train-3.5" not in tasks


def test_aggregation_numbers_are_fresh(restarted_run):
    numbers = [
        n
        for (n,) in _query(
            restarted_run["store"],
            "SELECT aggregation FROM tasks WHERE aggregation > 0",
        )
    ]

    assert len(numbers) == len(set(numbers))


def test_each_round_applies_mean_of_committed_attempt(restarted_run):
    root = restarted_run["root"]
    state = root / "coordinator" / "state"
    commits = _query(
        restarted_run["store"],
        "SELECT number, task_id, survivors FROM commits WHERE kind = 'round' "
        "ORDER BY number",
    )
    previous = {
        f"model/{k}": v
        for k, v in initial_global_weights(restarted_run["config"]).items()
    }
    names = list(previous)
    step = 2 * CLIP / (LEVELS - 1)
    for number, task_id, survivors in commits:
        vectors = [
            np.load(root / "markers" / d / f"{task_id}.npy")
            for d in survivors.split(",")
        ]
        total = np.sum(vectors, axis=0)
        expected = total[:-1] / total[-1]

        current = load_file(state / "checkpoints" / f"round-{number:04d}.safetensors")
        change = np.concatenate(
            [(current[n].astype(np.float64) - previous[n]).ravel() for n in names]
        )
        assert survivors.split(",") == list(DOMAINS), task_id
        np.testing.assert_allclose(change, expected, rtol=0, atol=step + 2e-6)
        previous = current


def test_reports_cover_every_round(restarted_run):
    history = json.loads(
        (restarted_run["root"] / "coordinator" / "state" / "history.json").read_text()
    )

    for domain in DOMAINS:
        rounds = [entry["round"] for entry in history[domain]["federated"]]
        assert rounds == list(range(ROUNDS + 1))


def test_clients_moved_on_from_stale_tasks(restarted_run):
    root = restarted_run["root"]
    logs = [(root / "clients" / d / "client.log").read_text() for d in DOMAINS]

    assert any("is over, waiting for the next one" in log for log in logs)
    assert all("retrying in" in log for log in logs)
