"""Environment variables over config files: precedence, parsing and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ClientConfig, ConfigError, CoordinatorConfig, load_toml
from common.envconfig import (
    CLIENT_VARIABLES,
    COORDINATOR_VARIABLES,
    environment_overrides,
)


def _client_file(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "client.toml"
    path.write_text(text + "[tls]\ninsecure = true\n")
    return path


def test_environment_fills_missing_client_keys(tmp_path: Path) -> None:
    environ = {
        "FEDCDR_DOMAIN": "books",
        "FEDCDR_DATA_DIR": "/srv/data",
        "FEDCDR_COORDINATOR": "coordinator:50051",
        "FEDCDR_THREADS": "3",
    }

    overrides = environment_overrides(CLIENT_VARIABLES, environ=environ)
    config = load_toml(ClientConfig, _client_file(tmp_path), overrides)

    assert config.domain == "books"
    assert config.data_dir == Path("/srv/data")
    assert config.coordinator == "coordinator:50051"
    assert config.threads == 3


def test_environment_overrides_file_values(tmp_path: Path) -> None:
    path = _client_file(
        tmp_path, 'domain = "films"\ndata_dir = "data"\ncoordinator = "a:1"\n'
    )
    environ = {"FEDCDR_DOMAIN": "books", "FEDCDR_COORDINATOR": "b:2"}

    config = load_toml(
        ClientConfig, path, environment_overrides(CLIENT_VARIABLES, environ=environ)
    )

    assert config.domain == "books"
    assert config.coordinator == "b:2"
    assert config.data_dir == tmp_path / "data"


def test_flags_override_environment() -> None:
    environ = {"FEDCDR_TLS_CA": "/env/ca.pem"}
    flags = {"tls": {"insecure": True}}

    overrides = environment_overrides(CLIENT_VARIABLES, flags, environ)

    assert overrides == {"tls": {"ca": "/env/ca.pem", "insecure": True}}


def test_relative_environment_path_resolves_against_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    overrides = environment_overrides(
        COORDINATOR_VARIABLES, environ={"FEDCDR_STATE_DIR": "state"}
    )

    assert overrides == {"state_dir": str(tmp_path / "state")}


def test_coordinator_variables_reach_config(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.toml"
    path.write_text('run_id = "r"\ndomains = ["books"]\n')
    environ = {
        "FEDCDR_LISTEN": "0.0.0.0:50051",
        "FEDCDR_TLS_CA": "/c/ca.pem",
        "FEDCDR_TLS_CERT": "/c/cert.pem",
        "FEDCDR_TLS_KEY": "/c/key.pem",
    }

    config = load_toml(
        CoordinatorConfig,
        path,
        environment_overrides(COORDINATOR_VARIABLES, environ=environ),
    )

    assert config.listen == "0.0.0.0:50051"
    assert config.tls.files() == (
        Path("/c/ca.pem"),
        Path("/c/cert.pem"),
        Path("/c/key.pem"),
    )


def test_unset_variables_change_nothing() -> None:
    assert environment_overrides(CLIENT_VARIABLES, environ={"OTHER": "x"}) == {}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FEDCDR_THREADS", "two", "FEDCDR_THREADS must be a whole number, got 'two'"),
        ("FEDCDR_DOMAIN", "  ", "FEDCDR_DOMAIN is empty"),
    ],
)
def test_invalid_variable_is_named(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        environment_overrides(CLIENT_VARIABLES, environ={name: value})


def test_invalid_domain_from_environment_fails_validation(tmp_path: Path) -> None:
    overrides = environment_overrides(
        CLIENT_VARIABLES,
        environ={"FEDCDR_DOMAIN": "Books!", "FEDCDR_DATA_DIR": "/d"},
    )

    with pytest.raises(ConfigError, match="invalid domain 'Books!'"):
        load_toml(ClientConfig, _client_file(tmp_path), overrides)
