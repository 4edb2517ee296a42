"""A DP run whose budget ends training early, with real coordinator and clients."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from common.accounting import epsilon
from tests.integration.test_federated_run import _wait_for, _write_domain

BIN = Path(sys.executable).parent
DOMAINS = ("books", "films")
ROUNDS = 3
LOCAL_EPOCHS = 2
NOISE = 1.0
DELTA = 1e-3


def _epsilon(rounds: int) -> float:
    # Every domain has fewer users than the batch size, so each step draws
    # every user (sampling rate 1) and a round is LOCAL_EPOCHS steps.
    return epsilon("rdp", NOISE, 1.0, rounds * LOCAL_EPOCHS, DELTA)


BUDGET = (_epsilon(1) + _epsilon(2)) / 2


def _coordinator_config(path: Path) -> None:
    path.write_text(
        f'run_id = "dp-budget"\ndomains = {json.dumps(list(DOMAINS))}\n'
        'listen = "127.0.0.1:0"\nstate_dir = "state"\n'
        "[tls]\ninsecure = true\n"
        "[secagg]\nenabled = false\n"
        "[timeouts]\njoin_s = 120\nround_s = 120\nreport_s = 120\n"
        f"[train]\nrounds = {ROUNDS}\nlocal_epochs = {LOCAL_EPOCHS}\n"
        "kmeans_iterations = 2\nbatch_size = 64\nlearning_rate = 0.005\n"
        "[model]\nhidden_size = 16\nn_layers = 1\ninner_size = 32\n"
        "n_subspaces = 8\nn_centroids = 8\nn_prompt_words = 2\n"
        f"[dp]\nenabled = true\nnoise_multiplier = {NOISE}\n"
        f"target_epsilon = {BUDGET!r}\ndelta = {DELTA}\nmax_grad_norm = 1.0\n"
    )


def _client_config(path: Path, domain: str, data: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'domain = "{domain}"\ndata_dir = "{data}"\nwork_dir = "{path.parent}"\n'
        "[tls]\ninsecure = true\n[prompt]\nepochs = 0\n"
    )


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    for seed, domain in enumerate(DOMAINS):
        _write_domain(root / "data", domain, seed)

    (root / "coordinator").mkdir()
    _coordinator_config(root / "coordinator" / "coordinator.toml")
    address_file = root / "coordinator.address"
    coordinator = subprocess.Popen(
        [
            BIN / "fedcdr-coordinator",
            "run",
            "--config",
            root / "coordinator" / "coordinator.toml",
            "--port-file",
            address_file,
        ],
        cwd=root / "coordinator",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = _wait_for(address_file, coordinator, 60)

    clients = {}
    for domain in DOMAINS:
        config = root / "clients" / domain / "client.toml"
        _client_config(config, domain, root / "data" / domain)
        clients[domain] = subprocess.Popen(
            [
                BIN / "fedcdr-client",
                "run",
                "--config",
                config,
                "--coordinator",
                address,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    logs = {d: p.communicate(timeout=600)[0] for d, p in clients.items()}
    _, coordinator_log = coordinator.communicate(timeout=120)
    return {
        "state": root / "coordinator" / "state",
        "coordinator": coordinator,
        "coordinator_log": coordinator_log,
        "clients": clients,
        "client_logs": logs,
    }


def test_budget_run_exits_cleanly(budget_run):
    assert budget_run["coordinator"].returncode == 0, budget_run["coordinator_log"]
    for domain, process in budget_run["clients"].items():
        assert process.returncode == 0, budget_run["client_logs"][domain]


def test_budget_run_keeps_rounds_within_budget(budget_run):
    with sqlite3.connect(budget_run["state"] / "run.sqlite") as db:
        rounds = db.execute(
            "SELECT number, epsilon, privacy FROM commits WHERE kind = 'round'"
        ).fetchall()
        status, message = db.execute("SELECT status, message FROM run").fetchone()

    assert [number for number, _, _ in rounds] == [1]
    assert rounds[0][1] == pytest.approx(_epsilon(1))
    assert set(json.loads(rounds[0][2])["user_epsilon"]) == set(DOMAINS)
    assert status == "done"
    assert "training stopped after round 1 of 3" in message
    assert "raise dp.target_epsilon or dp.noise_multiplier" in message
    assert "above dp.target_epsilon" in budget_run["coordinator_log"]


def test_budget_run_reports_epsilon(budget_run):
    metrics = json.loads((budget_run["state"] / "metrics.json").read_text())

    for domain in DOMAINS:
        privacy = metrics[domain]["privacy"]
        assert privacy["epsilon"] == pytest.approx(_epsilon(1))
        assert privacy["rounds"] == 1
        assert privacy["sample_rate"] == 1.0
        log = budget_run["client_logs"][domain]
        assert "DP-SGD round: 2 steps" in log
