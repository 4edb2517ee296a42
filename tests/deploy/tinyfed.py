"""A tiny federation for the deployment tests: generated domains, certificates, configs.

The model and the schedule are small enough that a round of three domains
takes a few seconds on 2 cores, so the tests spend their time on the
deployment itself.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOMAINS = ("books", "films", "tools")


def _load_federated_run() -> ModuleType:
    # The process-level integration test owns the generator of its small
    # domains; loading it by path keeps one copy of that data recipe.
    path = ROOT / "tests" / "integration" / "test_federated_run.py"
    spec = importlib.util.spec_from_file_location("federated_run_data", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_federated_run = _load_federated_run()
write_domain: Callable[[Path, str, int], None] = _federated_run._write_domain
# The [prompt] table that the integration tests' clients use.
SHORT_PROMPT: str = _federated_run.SHORT_PROMPT


def make_certificates(
    out: Path, domains: Sequence[str], hostnames: Sequence[str]
) -> Path:
    """Create a CA and certificates with the installed `fedcdr-coordinator certs`."""
    command = [str(BIN / "fedcdr-coordinator"), "certs", "--out", str(out)]
    command += ["--domains", ",".join(domains)]
    for hostname in hostnames:
        command += ["--hostname", hostname]
    subprocess.run(command, check=True, capture_output=True)
    return out


def coordinator_toml(
    *,
    rounds: int,
    round_s: float,
    min_domains: int = 0,
    domains: Sequence[str] = DOMAINS,
    run_id: str = "deploy-test",
    local_epochs: int = 1,
) -> str:
    """Return a coordinator config with the tiny model; the caller adds TLS and paths.

    With ``min_domains`` below the number of domains, secure aggregation runs
    in honest-but-curious mode: with three domains its threshold is 2, so a
    round survives one dropout, while active mode needs all three.
    """
    mode = "honest-but-curious" if 0 < min_domains < len(domains) else "active"
    return (
        f'run_id = "{run_id}"\n'
        f"domains = {json.dumps(list(domains))}\n"
        f"min_domains = {min_domains}\n"
        f"[timeouts]\njoin_s = 300\nround_s = {round_s}\nreport_s = 300\n"
        f"stage_s = {min(round_s, 30)}\n"
        f'[secagg]\nmode = "{mode}"\n'
        f"[train]\nrounds = {rounds}\nlocal_epochs = {local_epochs}\n"
        "kmeans_iterations = 2\n"
        "batch_size = 16\nlearning_rate = 0.005\n"
        "[model]\nhidden_size = 32\nn_layers = 1\ninner_size = 64\n"
        "n_subspaces = 8\nn_centroids = 16\nn_prompt_words = 4\n"
    )


def tls_table(folder: str) -> str:
    """Return a [tls] table naming ca.pem, cert.pem and key.pem in ``folder``."""
    return (
        f'[tls]\nca = "{folder}/ca.pem"\ncert = "{folder}/cert.pem"\n'
        f'key = "{folder}/key.pem"\n'
    )


class LogWatcher:
    """Reads a growing log file and waits for lines that match a pattern."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path.exists() else ""

    def wait_for(
        self,
        pattern: str,
        timeout_s: float,
        alive: Callable[[], bool] = lambda: True,
    ) -> re.Match[str]:
        """Return the first match of ``pattern``; raise AssertionError on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            if not alive():
                break
            time.sleep(0.1)
        raise AssertionError(
            f"{pattern!r} did not appear in {self.path} within {timeout_s:g} s; "
            f"log tail:\n{self.text()[-3000:]}"
        )
