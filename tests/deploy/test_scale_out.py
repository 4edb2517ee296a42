"""A federated round in which one domain client trains with 2 torchrun ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tinyfed import BIN, coordinator_toml, make_certificates, tls_table, write_domain

DOMAINS = ("books", "films")
ROUNDS = 1


def _client_toml(path: Path, domain: str, data: Path, bundle: Path) -> Path:
    path.parent.mkdir(parents=True)
    path.write_text(
        f'domain = "{domain}"\ndata_dir = "{data}"\nwork_dir = "{path.parent}"\n'
        "[prompt]\nepochs = 0\n"
        "[distributed]\ntimeout_s = 60\nidle_timeout_s = 300\n" + tls_table(str(bundle))
    )
    return path


def _wait_for_address(path: Path, process: subprocess.Popen) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.1)
    raise AssertionError(f"the coordinator wrote no address to {path} within 60 s")


def test_round_with_two_rank_client(tmp_path):
    data = tmp_path / "data"
    for seed, domain in enumerate(DOMAINS):
        write_domain(data, domain, seed)
    certs = make_certificates(tmp_path / "certs", DOMAINS, [])
    state = tmp_path / "coordinator"
    state.mkdir()
    (state / "coordinator.toml").write_text(
        'listen = "127.0.0.1:0"\nstate_dir = "state"\n'
        + coordinator_toml(rounds=ROUNDS, round_s=120, domains=DOMAINS)
        + tls_table(str(certs / "coordinator"))
    )
    configs = {
        domain: _client_toml(
            tmp_path / "clients" / domain / "client.toml",
            domain,
            data / domain,
            certs / "domains" / domain,
        )
        for domain in DOMAINS
    }
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}

    processes: dict[str, subprocess.Popen] = {}
    try:
        processes["coordinator"] = subprocess.Popen(
            [BIN / "fedcdr-coordinator", "run", "--config", state / "coordinator.toml"]
            + ["--port-file", state / "address"],
            cwd=state,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        address = _wait_for_address(state / "address", processes["coordinator"])
        # --standalone rendezvous on localhost picks a free port for the ranks.
        processes["books"] = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            + ["--nproc-per-node", "2", "-m", "client.main", "run"]
            + ["--config", configs["books"], "--coordinator", address],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes["films"] = subprocess.Popen(
            [BIN / "fedcdr-client", "run", "--config", configs["films"]]
            + ["--coordinator", address],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        books_log = processes["books"].communicate(timeout=600)[0]
        films_log = processes["films"].communicate(timeout=120)[0]
        table, coordinator_log = processes["coordinator"].communicate(timeout=120)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    assert processes["books"].returncode == 0, books_log
    assert processes["films"].returncode == 0, films_log
    assert processes["coordinator"].returncode == 0, coordinator_log
    assert "rank=1 of world_size=2 joined the process group" in books_log
    assert books_log.count("rank=1 trained its rows of a round") == ROUNDS
    assert "rank=1 stopping: the federated rounds are over" in books_log
    history = json.loads((state / "state" / "history.json").read_text())
    rounds = [entry["round"] for entry in history["books"]["federated"]]
    assert rounds == list(range(ROUNDS + 1))
    assert coordinator_log.count("masked input accepted") == len(DOMAINS) * (
        1 + 2 + ROUNDS
    )
    assert "books" in table
