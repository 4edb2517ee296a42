"""docker-compose.yml in real containers: podman's API service, docker-compose up.

The test brings the federation up with a short schedule (the coordinator's
config file is the only thing it replaces), waits for the run to end, and
checks the metrics and the isolation of the domains' volumes. It removes
every container, network and volume of its compose project, also on failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import containers
import tinyfed

ROOT = Path(__file__).resolve().parents[2]
DOMAINS = ("action", "comedy", "drama")
ROUNDS = 2
ONE_SHOT = ["certs", *(f"data-{d}" for d in DOMAINS)]
CLIENTS = [f"client-{d}" for d in DOMAINS]
HEALTH_COMMAND = [
    "fedcdr-healthcheck",
    *("--ca", "/srv/fedcdr/monitor/ca.pem"),
    *("--cert", "/srv/fedcdr/monitor/cert.pem"),
    *("--key", "/srv/fedcdr/monitor/key.pem"),
]
# Run inside each client's service definition: which domains' files can it find?
# The whole file system is searched except the kernel's and the installed
# packages, where recbole ships the public, unsplit MovieLens files.
PROBE = """
import json, os
from cryptography import x509
skip = ("/proc", "/sys", "/dev", "/opt/fedcdr/lib")
found = []
for folder, subfolders, files in os.walk("/"):
    subfolders[:] = [s for s in subfolders if os.path.join(folder, s) not in skip]
    found += [os.path.join(folder, f) for f in files if f.endswith((".inter", ".item"))]
pem = open("/srv/fedcdr/certs/cert.pem", "rb").read()
name = x509.load_pem_x509_certificate(pem).subject.rfc4514_string()
print(json.dumps({"files": sorted(found), "subject": name}))
"""


def _compose(service: containers.PodmanService, project: str, config: Path) -> tuple:
    command = ["docker-compose", "--file", str(ROOT / "docker-compose.yml")]
    command += ["--project-name", project, "--project-directory", str(ROOT)]
    environment = {
        **os.environ,
        "DOCKER_HOST": service.url,
        "FEDCDR_IMAGE": containers.IMAGE,
        "FEDCDR_COORDINATOR_CONFIG": str(config),
    }
    return command, environment


@pytest.fixture(scope="module")
def compose_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose: not installed (apt-get install docker-compose)")
    import docker

    containers.build_fedcdr_image()
    config = tmp_path_factory.mktemp("compose") / "coordinator.toml"
    config.write_text(
        tinyfed.coordinator_toml(rounds=ROUNDS, round_s=600, domains=DOMAINS)
    )
    config.chmod(0o644)
    project = f"fedcdr-test-{os.getpid()}"

    with containers.podman_service() as service:
        command, environment = _compose(service, project, config)

        def compose(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
            return subprocess.run(
                [*command, *args],
                env=environment,
                capture_output=True,
                text=True,
                timeout=timeout,
            )

        try:
            # NOTE: aardvark-dns 1.4 (podman 4.3) restarts its DNS server each
            # time a container on the network starts or stops, and lookups can
            # fail meanwhile. Three steps keep the clients' lookups of the
            # coordinator away from those restarts: the one-shot services
            # (certificates, data) to the end, the coordinator, the clients.
            for services in (ONE_SHOT, ["coordinator"], CLIENTS):
                detach = [] if services is ONE_SHOT else ["--detach", "--no-deps"]
                up = compose("up", "--no-build", *detach, *services, timeout=900)
                assert up.returncode == 0, up.stdout + up.stderr
            client = docker.DockerClient(base_url=service.url)
            found = {}
            for container in client.containers.list(
                all=True, filters={"label": f"com.docker.compose.project={project}"}
            ):
                found[container.labels["com.docker.compose.service"]] = container
            coordinator = found["coordinator"]

            health = _wait_healthy(coordinator)
            exit_status = coordinator.wait(timeout=900)
            results = {"coordinator": exit_status["StatusCode"]}
            for domain in DOMAINS:
                results[f"client-{domain}"] = found[f"client-{domain}"].wait(
                    timeout=300
                )["StatusCode"]
            logs = {
                name: container.logs().decode(errors="replace")
                for name, container in found.items()
            }
            probes = {
                domain: compose(
                    "run",
                    "--rm",
                    "--no-deps",
                    "-T",
                    f"client-{domain}",
                    "python",
                    "-c",
                    PROBE,
                )
                for domain in DOMAINS
            }
            metrics = compose(
                "run",
                "--rm",
                "--no-deps",
                "-T",
                "coordinator",
                "cat",
                "/srv/fedcdr/state/metrics.json",
            )
            yield {
                "health": health,
                "results": results,
                "logs": logs,
                "mounts": {n: c.attrs["Mounts"] for n, c in found.items()},
                "probes": probes,
                "metrics": metrics,
                "project": project,
            }
        finally:
            down = compose("down", "--volumes", "--remove-orphans", "--timeout", "5")
            assert down.returncode == 0, down.stdout + down.stderr


def _wait_healthy(container: Any, timeout_s: float = 300) -> str:
    """Run the image's health check in the coordinator until it reports SERVING."""
    deadline = time.monotonic() + timeout_s
    output = ""
    while time.monotonic() < deadline:
        container.reload()
        if container.status != "running":
            return f"coordinator stopped ({container.status}) before it was healthy"
        code, raw = container.exec_run(HEALTH_COMMAND)
        output = raw.decode(errors="replace")
        if code == 0:
            return output
        time.sleep(2)
    return f"not healthy within {timeout_s} s: {output}"


def test_compose_run_exits_cleanly(compose_run: dict) -> None:
    failed = {n: c for n, c in compose_run["results"].items() if c != 0}
    # Every failed container's log, since a client's log often contains the
    # cause of the coordinator's exit (and the reverse).
    report = "\n".join(
        f"{name} exited {code}:\n{compose_run['logs'][name][-3000:]}"
        for name, code in failed.items()
    )
    assert not failed, report


def test_coordinator_health_check_passes(compose_run: dict) -> None:
    assert "fedcdr.v1.Coordinator: SERVING" in compose_run["health"]


def test_coordinator_log_ends_with_metrics(compose_run: dict) -> None:
    log = compose_run["logs"]["coordinator"]

    for domain in DOMAINS:
        assert re.search(rf"^{domain}\s+\d+\s+\d+\s+0\.\d{{4}}", log, re.M), domain


def test_state_volume_holds_metrics(compose_run: dict) -> None:
    result = compose_run["metrics"]
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)

    assert sorted(metrics) == list(DOMAINS)
    for domain in DOMAINS:
        assert 0.0 <= metrics[domain]["federated"]["ndcg@10"] <= 1.0


@pytest.mark.parametrize("domain", DOMAINS)
def test_client_container_sees_only_its_domain(compose_run: dict, domain: str) -> None:
    result = compose_run["probes"][domain]
    assert result.returncode == 0, result.stdout + result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])

    assert probe["files"] == [
        f"/srv/fedcdr/data/{domain}.inter",
        f"/srv/fedcdr/data/{domain}.item",
    ]
    assert probe["subject"].startswith(f"CN={domain},")


@pytest.mark.parametrize("domain", DOMAINS)
def test_client_container_mounts_own_volumes(compose_run: dict, domain: str) -> None:
    project = compose_run["project"]
    mounts = compose_run["mounts"][f"client-{domain}"]
    names = {m["Name"] for m in mounts if m["Type"] == "volume"}

    assert names == {
        f"{project}_data-{domain}",
        f"{project}_certs-{domain}",
        f"{project}_work-{domain}",
    }
