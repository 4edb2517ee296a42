"""Run the demo federation: MovieLens genre domains, one coordinator, one client each.

Every party is a separate OS process on loopback with mutual TLS. The script
builds the domain folders and certificates, writes one config per process,
starts them, waits, and prints the coordinator's table of federated versus
local-only test metrics. It ends with `fedcdr-client recommend` for the first
user of the first domain, from that domain's saved model. Logs go to
<out>/logs/. On a terminal, the coordinator draws its live round table while
the run goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Demo schedule per dataset: kept small enough for 10 minutes on 2 cores.
SCHEDULES = {
    "ml-100k": {"rounds": 20, "local_epochs": 5, "kmeans_iterations": 10},
    "ml-1m": {"rounds": 10, "local_epochs": 3, "kmeans_iterations": 10},
}


def run_step(title: str, command: list[str]) -> str:
    print(f"==> {title}", flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"demo step failed: {' '.join(command)}")
    return result.stdout


def write_configs(out: Path, domains: list[str], dataset: str) -> None:
    schedule = SCHEDULES[dataset]
    certs = out / "certs"
    (out / "coordinator.toml").write_text(
        f'run_id = "demo-{dataset}"\n'
        f"domains = {json.dumps(domains)}\n"
        'listen = "127.0.0.1:0"\n'
        'state_dir = "."\n'
        "\n[tls]\n"
        'ca = "certs/coordinator/ca.pem"\n'
        'cert = "certs/coordinator/cert.pem"\n'
        'key = "certs/coordinator/key.pem"\n'
        "\n[timeouts]\njoin_s = 120\nround_s = 600\nreport_s = 900\n"
        "\n[train]\n" + "".join(f"{k} = {v}\n" for k, v in schedule.items())
    )
    for domain in domains:
        folder = out / "clients" / domain
        folder.mkdir(parents=True, exist_ok=True)
        bundle = certs / "domains" / domain
        (folder / "client.toml").write_text(
            f'domain = "{domain}"\n'
            f'data_dir = "{out / "data" / domain}"\n'
            f'work_dir = "{folder}"\n'
            "threads = 1\n"
            "\n[tls]\n"
            f'ca = "{bundle / "ca.pem"}"\n'
            f'cert = "{bundle / "cert.pem"}"\n'
            f'key = "{bundle / "key.pem"}"\n'
        )


# Files and folders a finished demo leaves in its folder, the coordinator's state_dir.
RUN_STATE = ("run.sqlite", "run.sqlite-wal", "run.sqlite-shm", "checkpoints")
RUN_REPORTS = ("metrics.json", "history.json", "validation_ndcg.png")


def clear_previous_run(out: Path) -> None:
    """Remove an earlier demo run's store, checkpoints and reports from ``out``.

    Each `make demo` is a new run. Without this, the coordinator would resume
    the finished run from its store, or refuse to start on checkpoints left
    without a store (exit code 4).
    """
    for name in RUN_STATE + RUN_REPORTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def wait_for_file(path: Path, process: subprocess.Popen, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if process.poll() is not None:
            raise SystemExit(f"the coordinator exited with code {process.returncode}")
        time.sleep(0.2)
    raise SystemExit(f"the coordinator did not start within {timeout_s:g} s")


def recommend_for_demo_user(out: Path, domain: str) -> str:
    """Run `fedcdr-client recommend` for the domain's first user and return its table."""
    from client.data import load_domain

    user = load_domain(out / "data" / domain).user_ids[0]
    return run_step(
        f"recommending 5 {domain} items for user {user}",
        [
            str(BIN / "fedcdr-client"),
            "recommend",
            "--config",
            str(out / "clients" / domain / "client.toml"),
            "--user",
            user,
            "-k",
            "5",
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(SCHEDULES), default="ml-100k")
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    args = parser.parse_args()
    out = args.out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    print(
        run_step(
            f"building {args.domains} {args.dataset} domains",
            [
                str(BIN / "fedcdr-client"),
                "datasets",
                "movielens",
                "--variant",
                args.dataset,
                "--domains",
                str(args.domains),
                "--out",
                str(out / "data"),
                "--force",
            ],
        ),
        end="",
    )
    domains = sorted(p.name for p in (out / "data").iterdir() if p.is_dir())
    run_step(
        "creating a CA and certificates",
        [
            str(BIN / "fedcdr-coordinator"),
            "certs",
            "--out",
            str(out / "certs"),
            "--domains",
            ",".join(domains),
            "--force",
        ],
    )
    write_configs(out, domains, args.dataset)
    clear_previous_run(out)

    print(
        f"==> starting the coordinator and {len(domains)} clients (logs in {logs})",
        flush=True,
    )
    port_file = out / "coordinator.address"
    port_file.unlink(missing_ok=True)
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # On a terminal the coordinator writes to it directly, so it draws the live
    # round table and then prints the final table itself.
    live = sys.stdout.isatty()
    coordinator_log = (logs / "coordinator.log").open("w")
    coordinator = subprocess.Popen(
        [
            str(BIN / "fedcdr-coordinator"),
            "run",
            "--config",
            str(out / "coordinator.toml"),
            "--port-file",
            str(port_file),
        ],
        stdout=None if live else subprocess.PIPE,
        stderr=coordinator_log,
        text=True,
        env=environment,
    )
    clients = {}
    try:
        address = wait_for_file(port_file, coordinator, 60)
        for domain in domains:
            log = (logs / f"client-{domain}.log").open("w")
            clients[domain] = subprocess.Popen(
                [
                    str(BIN / "fedcdr-client"),
                    "run",
                    "--config",
                    str(out / "clients" / domain / "client.toml"),
                    "--coordinator",
                    address,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
            )
        table, _ = coordinator.communicate()
        for process in clients.values():
            process.wait(timeout=60)
    finally:
        for process in [coordinator, *clients.values()]:
            if process.poll() is None:
                process.terminate()
        for process in clients.values():
            process.wait(timeout=60)

    failed = {d: p.returncode for d, p in clients.items() if p.returncode != 0}
    if coordinator.returncode != 0 or failed:
        print(
            f"the coordinator exited with {coordinator.returncode}; clients: {failed}"
        )
        print(f"see the logs in {logs}")
        return 1

    if not live:
        print(f"\nTest metrics at each model's best validation round ({args.dataset}):")
        print(table, end="")
    print(f"\nwrote metrics.json, history.json and validation_ndcg.png to {out}")
    print()
    print(recommend_for_demo_user(out, domains[0]), end="")
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
