"""Clients killed with SIGKILL at each secure-aggregation step, one step per round.

Five domains run five rounds. In round r one client stops at step r (before it
advertises keys, shares them, uploads its masked input, signs the survivors or
reveals its shares) and is killed there, then restarted. Every round must
complete, and each round's model change must equal the weighted mean of the
plain updates of the clients whose masked input was accepted.
"""

import json
import os
import signal
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

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DOMAINS = ("d0", "d1", "d2", "d3", "d4")
ROUNDS = 5
CLIP = 0.5
LEVELS = 2**16
# Victim of each round and the step it is killed before.
KILLS = {
    "d0": ("train-1", "advertise"),
    "d1": ("train-2", "share"),
    "d2": ("train-3", "mask"),
    "d3": ("train-4", "sign"),
    "d4": ("train-5", "reveal"),
}


def _coordinator_config(path: Path, certs: Path) -> None:
    path.write_text(
        f'run_id = "dropouts"\ndomains = {json.dumps(list(DOMAINS))}\n'
        'listen = "127.0.0.1:0"\nstate_dir = "state"\nmin_domains = 3\n'
        "[tls]\n"
        f'ca = "{certs}/coordinator/ca.pem"\n'
        f'cert = "{certs}/coordinator/cert.pem"\n'
        f'key = "{certs}/coordinator/key.pem"\n'
        "[timeouts]\njoin_s = 300\nround_s = 40\nstage_s = 20\nreport_s = 300\n"
        f"[train]\nrounds = {ROUNDS}\nlocal_epochs = 1\nkmeans_iterations = 1\n"
        "batch_size = 16\nlearning_rate = 0.005\n"
        "[model]\nhidden_size = 16\nn_layers = 1\ninner_size = 32\n"
        "n_subspaces = 4\nn_centroids = 8\nn_prompt_words = 2\n"
        f"[secagg]\nclip = {CLIP}\n"
    )


def _start_client(
    root: Path, domain: str, address: str, hold: str | None, pause: str | None = None
):
    test_variables = ("FEDCDR_TEST_HOLD", "FEDCDR_TEST_PAUSE")
    env = {k: v for k, v in os.environ.items() if k not in test_variables}
    if hold:
        env["FEDCDR_TEST_HOLD"] = hold
    if pause:
        env["FEDCDR_TEST_PAUSE"] = pause
    log = open(root / "clients" / domain / "client.log", "a")  # noqa: SIM115
    return subprocess.Popen(
        [
            sys.executable,
            HERE / "staged_client.py",
            root / "markers" / domain,
            "run",
            "--config",
            root / "clients" / domain / "client.toml",
            "--coordinator",
            address,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _supervise(root, coordinator, clients, address, timeout_s=900):
    """Kill each victim once it waits at its step, and restart it without a
    hold once the others reach the round's last step, so that it cannot come
    back into the same aggregation with fresh keys."""
    killed = {}
    restarted = set()
    deadline = time.monotonic() + timeout_s
    while coordinator.poll() is None:
        assert time.monotonic() < deadline, "the run did not finish in time"
        for domain, (task, step) in KILLS.items():
            held = root / "markers" / domain / f"{task}.{step}.held"
            if domain not in killed and held.exists():
                clients[domain].send_signal(signal.SIGKILL)
                clients[domain].wait(30)
                killed[domain] = clients[domain].returncode
            others_done = any(
                (root / "markers" / d / f"{task}.reveal").exists()
                for d in DOMAINS
                if d != domain
            )
            if domain in killed and domain not in restarted and others_done:
                clients[domain] = _start_client(root, domain, address, hold=None)
                restarted.add(domain)
        time.sleep(0.2)
    return killed


@pytest.fixture(scope="module")
def dropout_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dropouts")
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
    address_file = root / "coordinator.address"
    coordinator_log = open(root / "coordinator.log", "w")  # noqa: SIM115
    coordinator = subprocess.Popen(
        [
            BIN / "fedcdr-coordinator",
            "run",
            "--config",
            config_path,
            "--port-file",
            address_file,
        ],
        cwd=root / "coordinator",
        stdout=coordinator_log,
        stderr=subprocess.STDOUT,
    )
    clients = {}
    try:
        address = _wait_for(address_file, coordinator, 60)
        for domain in DOMAINS:
            _client_config(
                root / "clients" / domain / "client.toml",
                domain,
                data / domain,
                certs / "domains" / domain,
            )
            clients[domain] = _start_client(
                root, domain, address, "{}.{}".format(*KILLS[domain])
            )
        killed = _supervise(root, coordinator, clients, address)
        for process in clients.values():
            process.wait(300)
    finally:
        for process in [coordinator, *clients.values()]:
            if process.poll() is None:
                process.kill()
    return {
        "root": root,
        "config": load_toml(CoordinatorConfig, config_path),
        "coordinator": coordinator,
        "log": (root / "coordinator.log").read_text(),
        "killed": killed,
        "clients": clients,
    }


def test_every_victim_killed_at_its_step(dropout_run):
    assert sorted(dropout_run["killed"]) == sorted(KILLS)
    for domain, code in dropout_run["killed"].items():
        assert code == -signal.SIGKILL, domain


def test_run_finishes_despite_dropouts(dropout_run):
    assert dropout_run["coordinator"].returncode == 0, dropout_run["log"][-3000:]
    for domain, process in dropout_run["clients"].items():
        log = (dropout_run["root"] / "clients" / domain / "client.log").read_text()
        assert process.returncode == 0, log[-3000:]


def _survivors(root: Path, task: str) -> list[str]:
    return [d for d in DOMAINS if (root / "markers" / d / f"{task}.uploaded").exists()]


def test_victims_left_out_only_before_masked_input(dropout_run):
    root = dropout_run["root"]
    for domain, (task, step) in KILLS.items():
        uploaded = domain in _survivors(root, task)
        assert uploaded == (step in ("sign", "reveal")), (domain, task, step)


def test_each_round_applies_mean_of_survivors(dropout_run):
    root = dropout_run["root"]
    state = root / "coordinator" / "state" / "checkpoints"
    # Names in wire order, the order of the upload vector.
    previous = {
        f"model/{k}": v
        for k, v in initial_global_weights(dropout_run["config"]).items()
    }
    names = list(previous)
    step = 2 * CLIP / (LEVELS - 1)
    for round_index in range(1, ROUNDS + 1):
        task = f"train-{round_index}"
        survivors = _survivors(root, task)
        vectors = [np.load(root / "markers" / d / f"{task}.npy") for d in survivors]
        total = np.sum(vectors, axis=0)
        expected = total[:-1] / total[-1]

        current = load_file(state / f"round-{round_index:04d}.safetensors")
        change = np.concatenate(
            [(current[n].astype(np.float64) - previous[n]).ravel() for n in names]
        )
        assert len(survivors) >= 3, (task, survivors)
        np.testing.assert_allclose(change, expected, rtol=0, atol=step + 2e-6)
        previous = current


def test_coordinator_logs_each_dropout(dropout_run):
    log = dropout_run["log"]
    for domain, (task, _) in KILLS.items():
        assert f"task={task} stage=" in log
        assert f"'{domain}'" in log
