"""Environment variables that override the deployment values of a config file.

A deployment keeps one config file per process and sets the values that
differ between hosts (the domain, the coordinator address, paths) in the
environment. Precedence, lowest first: the file, these variables, flags.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import ConfigError


@dataclass(frozen=True)
class Variable:
    """One environment variable and the config key it overrides."""

    name: str
    key: tuple[str, ...]
    parse: Callable[[str, str], Any]
    meaning: str


def _text(name: str, value: str) -> str:
    if not value.strip():
        raise ConfigError(f"environment variable {name} is empty; set it or unset it")
    return value.strip()


def _path(name: str, value: str) -> str:
    # Relative paths resolve against the working folder of the process, where
    # the file's own relative paths resolve against the file's folder.
    return str(Path(_text(name, value)).absolute())


def _whole_number(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"environment variable {name} must be a whole number, got {value!r}"
        ) from None


_TLS = (
    Variable("FEDCDR_TLS_CA", ("tls", "ca"), _path, "CA certificate, PEM"),
    Variable("FEDCDR_TLS_CERT", ("tls", "cert"), _path, "own certificate, PEM"),
    Variable("FEDCDR_TLS_KEY", ("tls", "key"), _path, "own private key, PEM"),
)

CLIENT_VARIABLES: tuple[Variable, ...] = (
    Variable("FEDCDR_DOMAIN", ("domain",), _text, "domain name"),
    Variable("FEDCDR_COORDINATOR", ("coordinator",), _text, "host:port to dial"),
    Variable("FEDCDR_DATA_DIR", ("data_dir",), _path, "domain data folder"),
    Variable("FEDCDR_WORK_DIR", ("work_dir",), _path, "cache and saved model"),
    Variable("FEDCDR_THREADS", ("threads",), _whole_number, "torch threads"),
    *_TLS,
)

COORDINATOR_VARIABLES: tuple[Variable, ...] = (
    Variable("FEDCDR_LISTEN", ("listen",), _text, "host:port to bind"),
    Variable("FEDCDR_STATE_DIR", ("state_dir",), _path, "checkpoints and reports"),
    *_TLS,
)


def environment_overrides(
    variables: tuple[Variable, ...],
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return config overrides from the set ``variables``, then ``flags`` on top.

    The result has the nested shape that ``common.config.load_toml`` merges
    into the file's tables before validation.

    Raises
    ------
    ConfigError
        When a set variable is empty or cannot be parsed; the message names it.
    """
    environ = os.environ if environ is None else environ
    overrides: dict[str, Any] = {}
    for variable in variables:
        if variable.name not in environ:
            continue
        value = variable.parse(variable.name, environ[variable.name])
        table = overrides
        for part in variable.key[:-1]:
            table = table.setdefault(part, {})
        table[variable.key[-1]] = value

    for key, value in (flags or {}).items():
        if isinstance(value, dict) and isinstance(overrides.get(key), dict):
            overrides[key] = {**overrides[key], **value}
        else:
            overrides[key] = value
    return overrides
