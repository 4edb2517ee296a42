"""Soak the coordinator: many rounds with a small model, its RSS sampled each round.

`make bench-soak` runs a coordinator and three domain clients as separate
processes over mutual TLS on loopback, with the tiny model of the deployment
tests and secure aggregation on. Each time the coordinator logs a round
commit, the script reads the coordinator's resident set size (VmRSS in
/proc/PID/status). It writes bench/results/soak.json and the "Coordinator
soak" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.secagg import machine
from bench.docs_section import replace_section
from tests.deploy.tinyfed import (
    DOMAINS,
    coordinator_toml,
    make_certificates,
    tls_table,
    write_domain,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results" / "soak.json"
DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Coordinator soak"
COMMITTED = re.compile(r"round=(\d+) committed")
# Rounds before this one are left out of the growth figures, so that one-time
# allocations of the first rounds do not count as growth.
WARM_ROUND = 10


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="rounds to run (200)")
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=3600.0,
        help="stop the run after this many seconds and report the rounds done (3600)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON output")
    parser.add_argument("--docs", type=Path, default=DOCS, help="benchmarks page")
    return parser


def rss_bytes(pid: int) -> int:
    """Return the resident set size of process ``pid`` in bytes (Linux only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def prepare(work: Path, rounds: int) -> Path:
    """Write the domains, certificates and configs; return the coordinator config."""
    certs = make_certificates(work / "certs", DOMAINS, ["127.0.0.1"])
    for seed, domain in enumerate(DOMAINS):
        write_domain(work / "data", domain, seed)
        folder = work / "clients" / domain
        folder.mkdir(parents=True)
        (folder / "client.toml").write_text(
            f'domain = "{domain}"\ndata_dir = "{work / "data" / domain}"\n'
            f'work_dir = "{folder}"\nthreads = 1\nconnect_timeout_s = 120\n'
            + tls_table(str(certs / "domains" / domain))
        )
    config = work / "coordinator.toml"
    # Top-level keys first, because coordinator_toml ends inside a table.
    config.write_text(
        f'listen = "127.0.0.1:0"\nstate_dir = "{work / "state"}"\n'
        + coordinator_toml(rounds=rounds, round_s=120, run_id="soak")
        + tls_table(str(certs / "coordinator"))
    )
    return config


def start_processes(
    work: Path, config: Path
) -> tuple[subprocess.Popen[bytes], list[subprocess.Popen[bytes]]]:
    """Start the coordinator, wait for its address, then start the clients."""
    address_file = work / "coordinator.address"
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (work / "coordinator.log").open("wb") as log:
        coordinator = subprocess.Popen(
            [str(BIN / "fedcdr-coordinator"), "run", "--config", str(config)]
            + ["--port-file", str(address_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    deadline = time.monotonic() + 120
    while not (address_file.exists() and address_file.read_text().strip()):
        if coordinator.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"the coordinator did not start; see {work / 'coordinator.log'}"
            )
        time.sleep(0.2)
    address = address_file.read_text().strip()
    clients = []
    for domain in DOMAINS:
        folder = work / "clients" / domain
        with (folder / "client.log").open("wb") as log:
            clients.append(
                subprocess.Popen(
                    [str(BIN / "fedcdr-client"), "run"]
                    + ["--config", str(folder / "client.toml")]
                    + ["--coordinator", address],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=environment,
                )
            )
    return coordinator, clients


def sample_rounds(
    coordinator: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> list[dict[str, float]]:
    """Sample the coordinator's RSS at each round commit until it exits or times out."""
    started = time.monotonic()
    samples: list[dict[str, float]] = []
    seen = 0
    while coordinator.poll() is None and time.monotonic() - started < timeout_s:
        rounds = [int(n) for n in COMMITTED.findall(log.read_text(errors="replace"))]
        latest = max(rounds, default=0)
        if latest > seen:
            try:
                rss = rss_bytes(coordinator.pid)
            except (FileNotFoundError, ProcessLookupError):
                break
            seen = latest
            samples.append(
                {
                    "round": latest,
                    "rss_bytes": rss,
                    "seconds": round(time.monotonic() - started, 2),
                }
            )
            print(f"round {latest}: coordinator RSS {rss / 2**20:.1f} MiB", flush=True)
        time.sleep(0.1)
    return samples


def summarize(samples: list[dict[str, float]]) -> dict[str, Any]:
    """Return the RSS at the first, warm and last rounds and the growth per round."""
    if not samples:
        return {"rounds_done": 0}
    first, last = samples[0], samples[-1]
    warm = next((s for s in samples if s["round"] >= WARM_ROUND), first)
    after_warm = [s for s in samples if s["round"] >= warm["round"]]
    slope = 0.0
    if len(after_warm) >= 2:
        rounds = np.array([s["round"] for s in after_warm], dtype=float)
        rss = np.array([s["rss_bytes"] for s in after_warm], dtype=float)
        slope = float(np.polyfit(rounds, rss, 1)[0])
    return {
        "rounds_done": int(last["round"]),
        "rss_first_mib": first["rss_bytes"] / 2**20,
        "rss_warm_mib": warm["rss_bytes"] / 2**20,
        "warm_round": int(warm["round"]),
        "rss_last_mib": last["rss_bytes"] / 2**20,
        "rss_max_mib": max(s["rss_bytes"] for s in samples) / 2**20,
        "growth_after_warm_mib": (last["rss_bytes"] - warm["rss_bytes"]) / 2**20,
        "slope_kib_per_round": slope / 1024,
        # From the first commit on, so the join and the codebook stay out.
        "seconds_per_round": (last["seconds"] - first["seconds"])
        / max(1, len(samples) - 1),
    }


def render(results: dict[str, Any]) -> str:
    """Return the "Coordinator soak" section of docs/benchmarks.md."""
    summary = results["summary"]
    machine = results["machine"]
    lines = [
        HEADING,
        "",
        f"`make bench-soak` ({results['date']}, {machine['cpus']} CPUs, "
        f"{machine['cpu_model']}, Python {machine['python']}) runs one coordinator "
        f"and {len(DOMAINS)} domain clients as processes over mutual TLS on "
        "loopback. The model is the tiny one of the deployment tests (hidden size "
        "32, one layer, 8 subspaces of 16 centroids), with secure aggregation on "
        "and one local epoch per round. The 1-minute load average was "
        f"{results['load_average']:.1f} when the run started. The coordinator's "
        "output goes to a file, so its round table runs in the "
        "one-log-line-per-task mode. The script reads the coordinator's VmRSS "
        "each time the coordinator logs a round commit.",
        "",
    ]
    if summary["rounds_done"] < results["rounds"]:
        lines += [
            f"Only {summary['rounds_done']} of the {results['rounds']} rounds ran "
            f"within the {results['timeout_s']:g} s limit of this run.",
            "",
        ]
    if summary["rounds_done"]:
        lines += [
            "| figure | value |",
            "|---|---|",
            f"| rounds committed | {summary['rounds_done']} |",
            f"| RSS after round 1 | {summary['rss_first_mib']:.1f} MiB |",
            f"| RSS after round {summary['warm_round']} | "
            f"{summary['rss_warm_mib']:.1f} MiB |",
            f"| RSS after the last round | {summary['rss_last_mib']:.1f} MiB |",
            f"| maximum RSS | {summary['rss_max_mib']:.1f} MiB |",
            f"| growth from round {summary['warm_round']} to the last | "
            f"{summary['growth_after_warm_mib']:+.1f} MiB |",
            f"| least-squares slope from round {summary['warm_round']} | "
            f"{summary['slope_kib_per_round']:+.1f} KiB per round |",
            f"| wall time per round | {summary['seconds_per_round']:.2f} s |",
            "",
            "The coordinator keeps every domain's reported metrics of every round "
            "in memory for the final report, and SQLite's page cache grows with the "
            "run store, so some growth per round is expected. How much each part "
            "contributes was not measured. bench/results/soak.json has every "
            "sample.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.rounds:
        raise SystemExit(f"--rounds must be at least 1, got {args.rounds}")
    load_average = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="fedcdr-soak-") as folder:
        work = Path(folder)
        config = prepare(work, args.rounds)
        coordinator, clients = start_processes(work, config)
        try:
            samples = sample_rounds(
                coordinator, work / "coordinator.log", args.timeout_s
            )
        finally:
            for process in [coordinator, *clients]:
                if process.poll() is None:
                    process.terminate()
            for process in [coordinator, *clients]:
                process.wait(60)
        if coordinator.returncode not in (0, -15, 5):
            tail = (work / "coordinator.log").read_text(errors="replace")[-3000:]
            print(f"coordinator exited with {coordinator.returncode}:\n{tail}")
    results = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": machine(),
        "load_average": load_average,
        "rounds": args.rounds,
        "timeout_s": args.timeout_s,
        "coordinator_exit_code": coordinator.returncode,
        "summary": summarize(samples),
        "samples": samples,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    replace_section(args.docs, HEADING, render(results))
    print(json.dumps(results["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
