"""docker-compose.yml: the file validates, its volumes isolate the domains, and
every command line it runs matches the installed command-line interface."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOMAINS = ("action", "comedy", "drama")
SHELL_OPERATORS = {";", "&&", "||", "|", "then", "do", "fi", "done"}


@pytest.fixture(scope="module")
def resolved() -> dict:
    """Return the file as `docker-compose config` resolves it."""
    if shutil.which("docker-compose") is None:
        pytest.skip(
            "docker-compose config: docker-compose is not installed "
            "(apt-get install docker-compose)"
        )
    result = subprocess.run(
        ["docker-compose", "--file", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _volume_names(service: dict) -> set[str]:
    names = set()
    for volume in service.get("volumes", []):
        source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
        if not source.startswith(("/", ".")):
            names.add(source)
    return names


def test_compose_config_lists_services(resolved: dict) -> None:
    expected = {"certs", "coordinator"}
    expected |= {f"data-{d}" for d in DOMAINS} | {f"client-{d}" for d in DOMAINS}

    assert set(resolved["services"]) == expected


@pytest.mark.parametrize("domain", DOMAINS)
def test_client_mounts_only_its_own_volumes(resolved: dict, domain: str) -> None:
    mounted = _volume_names(resolved["services"][f"client-{domain}"])

    assert mounted == {f"data-{domain}", f"certs-{domain}", f"work-{domain}"}


@pytest.mark.parametrize("domain", DOMAINS)
def test_data_volume_has_one_client(resolved: dict, domain: str) -> None:
    users = {
        name
        for name, service in resolved["services"].items()
        if f"data-{domain}" in _volume_names(service)
    }

    assert users == {f"data-{domain}", f"client-{domain}"}


def test_coordinator_mounts_no_data(resolved: dict) -> None:
    mounted = _volume_names(resolved["services"]["coordinator"])

    assert not {v for v in mounted if v.startswith(("data-", "work-"))}
    assert "ca" not in mounted


def _command_lines(service: dict) -> list[list[str]]:
    """Return every fedcdr-* command line that ``service`` runs."""
    lines: list[list[str]] = []
    command = service.get("command", [])
    if isinstance(command, str):
        command = shlex.split(command)
    if command[:2] == ["sh", "-c"]:
        # Compose writes a literal $ as $$; the shell variables stay unexpanded.
        for line in command[2].replace("$$", "$").splitlines():
            tokens = shlex.split(line, comments=True)
            for start, token in enumerate(tokens):
                if token.startswith("fedcdr-"):
                    end = start
                    while end < len(tokens) and tokens[end] not in SHELL_OPERATORS:
                        end += 1
                    lines.append(tokens[start:end])
    elif command:
        lines.append(list(command))
    probe = service.get("healthcheck", {}).get("test", [])
    if probe[:1] == ["CMD"]:
        lines.append(probe[1:])
    return lines


def _compose_command_lines() -> list[tuple[str, list[str]]]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    found = []
    for name, service in raw["services"].items():
        for line in _command_lines(service):
            found.append((name, line))
    return found


@functools.cache
def _help(path: tuple[str, ...]) -> str:
    """Return the --help text of ``path`` from the installed entry point.

    The console script's entry point runs in this process, which saves a
    torch import per call over starting the script.
    """
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name=path[0])
    output = io.StringIO()
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit) as stopped:
        entry.load()([*path[1:], "--help"])
    assert stopped.value.code == 0, f"{' '.join(path)} --help exited {stopped.value}"
    return output.getvalue()


def test_every_service_runs_a_fedcdr_command() -> None:
    services = {name for name, _ in _compose_command_lines()}
    raw = yaml.safe_load(COMPOSE_FILE.read_text())

    assert services == set(raw["services"])


@pytest.mark.parametrize(
    ("service", "argv"),
    _compose_command_lines(),
    ids=lambda value: value if isinstance(value, str) else " ".join(value[:2]),
)
def test_compose_command_matches_cli(service: str, argv: list[str]) -> None:
    # Descend through the subcommands the parser offers, then check that each
    # flag the command line uses is one the (sub)command documents.
    path = [argv[0]]
    text = _help(tuple(path))
    rest = argv[1:]
    while rest:
        choices = re.search(r"\{([a-z,-]+)\}", text.split("\n\n")[0])
        if not choices or rest[0] not in choices.group(1).split(","):
            break
        path.append(rest.pop(0))
        text = _help(tuple(path))
    flags = [token.split("=")[0] for token in rest if token.startswith("--")]

    for flag in flags:
        assert re.search(rf"(^|\s){re.escape(flag)}\b", text), (
            f"{service}: `{' '.join(path)}` has no flag {flag}"
        )
