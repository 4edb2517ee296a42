"""A federation across emulated hosts: one network namespace per process.

The coordinator and each domain client run in their own namespace, cabled to
a bridge in a switch namespace, with addresses that exist only inside those
namespaces. Each client runs in a private mount namespace in which the other
domains' folders are covered, so it sees only its own data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import netns
import tinyfed

DOMAINS = tinyfed.DOMAINS
FIRST_ADDRESS = "10.200.0.1"
SECOND_ADDRESS = "10.200.0.2"
CLIENT_ADDRESSES = {
    "books": "10.200.0.11",
    "films": "10.200.0.12",
    "tools": "10.200.0.13",
}
PORT = 50051
# Rounds of the tiny model take about 0.3 s; 40 of them leave the cut client
# well over 10 s after its link is back to rejoin before the run ends.
ROUNDS = 40
ROUND_S = 20
CUT_DOMAIN = "books"
CUT_ROUND = 1


@pytest.fixture(scope="module")
def network() -> Iterator[netns.Network]:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    try:
        network = netns.Network(f"fcdr{os.getpid() % 100000}")
    except netns.NamespaceError as error:
        pytest.skip(f"network namespaces: {error}")
    try:
        network.add_host("coord", f"{FIRST_ADDRESS}/24")
        for domain, address in CLIENT_ADDRESSES.items():
            network.add_host(domain, f"{address}/24")
    except netns.NamespaceError as error:
        network.remove()
        pytest.skip(f"network namespaces: {error}")
    yield network
    left = network.remove()
    assert left == [], f"namespaces left behind: {left}"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lay out one folder per emulated host: data, certificates, configs."""
    root = tmp_path_factory.mktemp("hosts")
    certs = tinyfed.make_certificates(
        root / "ca", DOMAINS, [FIRST_ADDRESS, SECOND_ADDRESS]
    )
    coordinator = root / "coord"
    coordinator.mkdir()
    # Copies, because every host's view hides the CA's folder.
    shutil.copytree(certs / "coordinator", coordinator / "certs")
    for seed, domain in enumerate(DOMAINS):
        host = root / domain
        tinyfed.write_domain(host / "data", domain, seed)
        shutil.copytree(certs / "domains" / domain, host / "certs")
    return root


def write_configs(root: Path, address: str, run_id: str, rounds: int) -> None:
    """Point the coordinator and every client at ``address``, by config files only."""
    coordinator = root / "coord"
    (coordinator / "coordinator.toml").write_text(
        f'listen = "{address}:{PORT}"\nstate_dir = "state-{run_id}"\n'
        + tinyfed.coordinator_toml(
            rounds=rounds, round_s=ROUND_S, min_domains=2, run_id=run_id
        )
        + tinyfed.tls_table("certs")
    )
    for domain in DOMAINS:
        host = root / domain
        (host / "client.toml").write_text(
            f'domain = "{domain}"\ndata_dir = "data/{domain}"\nwork_dir = "work"\n'
            f'coordinator = "{address}:{PORT}"\n'
            "rpc_timeout_s = 10\nconnect_timeout_s = 120\n"
            + tinyfed.tls_table("certs")
            + tinyfed.SHORT_PROMPT
        )


def others(root: Path, host: str) -> list[Path]:
    """Return the folders of every other host and of the CA."""
    return [root / h for h in ("ca", "coord", *DOMAINS) if h != host]


class Run:
    """The processes of one run, their logs and exit codes."""

    def __init__(self, network: netns.Network, root: Path, name: str) -> None:
        self.network = network
        self.root = root
        self.logs = root / f"logs-{name}"
        self.logs.mkdir()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.coordinator_log = tinyfed.LogWatcher(self.logs / "coord.log")

    def start(self, host: str, argv: list[str]) -> None:
        with (self.logs / f"{host}.log").open("wb") as log:
            self.processes[host] = subprocess.Popen(
                self.network.command(host, argv, others(self.root, host)),
                cwd=self.root / host,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def start_all(self) -> None:
        self.start(
            "coord",
            [
                str(tinyfed.BIN / "fedcdr-coordinator"),
                "run",
                "--config",
                "coordinator.toml",
            ],
        )
        self.coordinator_log.wait_for("serving on", 60, self.coordinator_alive)
        for domain in DOMAINS:
            self.start(
                domain,
                [str(tinyfed.BIN / "fedcdr-client"), "run", "--config", "client.toml"],
            )

    def coordinator_alive(self) -> bool:
        return self.processes["coord"].poll() is None

    def wait(self, timeout_s: float) -> dict[str, int]:
        return {host: p.wait(timeout=timeout_s) for host, p in self.processes.items()}

    def log(self, host: str) -> str:
        return (self.logs / f"{host}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


@pytest.fixture(scope="module")
def run_with_cut(network: netns.Network, hosts: Path) -> Iterator[dict]:
    """Run 1: all three clients; one loses its link mid-round, then gets it back."""
    write_configs(hosts, FIRST_ADDRESS, "first", ROUNDS)
    run = Run(network, hosts, "first")
    try:
        run.start_all()
        run.coordinator_log.wait_for(
            rf"round={CUT_ROUND} started", 300, run.coordinator_alive
        )
        network.set_link(CUT_DOMAIN, up=False)
        # Rounds of the tiny model are short, so note which one was running.
        cut_round = max(
            int(r)
            for r in re.findall(r"round=(\d+) started", run.coordinator_log.text())
        )
        dropped = run.coordinator_log.wait_for(
            rf"task=train-(\d+) (?:stage=\w+ )?dropped domains \['{CUT_DOMAIN}'\]",
            ROUND_S * 3 + 60,
            run.coordinator_alive,
        )
        network.set_link(CUT_DOMAIN, up=True)
        codes = run.wait(timeout_s=400)
    finally:
        network.set_link(CUT_DOMAIN, up=True)
        run.stop()
    yield {
        "run": run,
        "codes": codes,
        "cut_round": cut_round,
        "dropped_round": int(dropped.group(1)),
    }


def test_multihost_run_completes(run_with_cut: dict) -> None:
    run = run_with_cut["run"]
    for host, code in run_with_cut["codes"].items():
        assert code == 0, f"{host} exited {code}:\n{run.log(host)[-3000:]}"


def test_multihost_run_is_securely_aggregated(run_with_cut: dict) -> None:
    log = run_with_cut["run"].log("coord")

    assert "masked input accepted task=train-1" in log
    assert "upload accepted" not in log


def test_multihost_report_lists_every_domain(run_with_cut: dict, hosts: Path) -> None:
    metrics = json.loads((hosts / "coord" / "state-first" / "metrics.json").read_text())

    assert sorted(metrics) == sorted(DOMAINS)


def test_link_down_drops_client_for_one_round(run_with_cut: dict) -> None:
    log = run_with_cut["run"].log("coord")
    dropped_round = run_with_cut["dropped_round"]
    cut_round = run_with_cut["cut_round"]

    # The link went down while round cut_round ran. If the client had already
    # uploaded to that round, the next round is the one it misses.
    assert dropped_round in (cut_round, cut_round + 1)
    assert f"round={dropped_round} committed" in log
    dropped_lines = re.findall(rf"dropped domains \[[^]]*'{CUT_DOMAIN}'", log)
    assert len(dropped_lines) == 1, dropped_lines


def test_client_rejoins_after_link_up(run_with_cut: dict) -> None:
    log = run_with_cut["run"].log("coord")
    dropped_round = run_with_cut["dropped_round"]
    later = [
        int(r)
        for r in re.findall(
            rf"(?:upload|masked input) accepted task=train-(\d+) domain={CUT_DOMAIN}",
            log,
        )
        if int(r) > dropped_round
    ]

    # A client cut after its masked input was accepted (in a later secure
    # aggregation stage) still counts in that round's sum, so the coordinator
    # never marks it as dropped and has no return to log.
    missed_input = re.search(
        rf"stage=MASKED_INPUT dropped domains \[[^]]*'{CUT_DOMAIN}'", log
    )
    if missed_input:
        assert f"domain={CUT_DOMAIN} is back" in log
    assert later, f"{CUT_DOMAIN} uploaded to no round after {dropped_round}"


def test_client_sees_only_its_own_data(network: netns.Network, hosts: Path) -> None:
    listing = (
        "import json, os, sys\n"
        "seen = {}\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        seen[path] = sorted(os.listdir(path))\n"
        "    except FileNotFoundError:\n"
        "        seen[path] = None\n"
        "print(json.dumps(seen))\n"
    )
    folders = [str(hosts / d / "data") for d in DOMAINS]
    for domain in DOMAINS:
        argv = [sys.executable, "-c", listing, *folders]
        result = subprocess.run(
            network.command(domain, argv, others(hosts, domain)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout)
        for other in DOMAINS:
            expected = [other] if other == domain else None
            assert seen[str(hosts / other / "data")] == expected, (domain, seen)


def test_coordinator_address_changes_by_config(
    run_with_cut: dict, network: netns.Network, hosts: Path
) -> None:
    # Move the coordinator to a new address: the old one is gone, so a client
    # that still dialed it would fail.
    # Deleting a primary address also deletes its secondaries, so delete first.
    network.delete_address("coord", f"{FIRST_ADDRESS}/24")
    network.add_address("coord", f"{SECOND_ADDRESS}/24")
    write_configs(hosts, SECOND_ADDRESS, "second", rounds=1)
    run = Run(network, hosts, "second")
    try:
        run.start_all()
        codes = run.wait(timeout_s=300)
    finally:
        run.stop()

    assert f"serving on {SECOND_ADDRESS}:{PORT}" in run.log("coord")
    for host, code in codes.items():
        assert code == 0, f"{host} exited {code}:\n{run.log(host)[-3000:]}"
