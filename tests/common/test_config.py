"""Loading and validating the TOML run configuration."""

from pathlib import Path

import pytest

from common.config import (
    TLSConfig,
    ClientConfig,
    ConfigError,
    CoordinatorConfig,
    ModelConfig,
    PromptConfig,
    load_toml,
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_load_coordinator_config_resolves_relative_paths(tmp_path):
    path = _write(
        tmp_path,
        'run_id = "r"\ndomains = ["a", "b"]\nstate_dir = "state"\n'
        '[tls]\nca = "ca.pem"\ncert = "c.pem"\nkey = "k.pem"\n'
        "[train]\nrounds = 3\n[model]\nhidden_size = 32\n",
    )

    config = load_toml(CoordinatorConfig, path)

    assert config.state_dir == tmp_path / "state"
    assert config.tls.ca == tmp_path / "ca.pem"
    assert config.train.rounds == 3
    assert config.model.hidden_size == 32
    assert config.min_domains == 2


def test_load_rejects_unknown_key(tmp_path):
    path = _write(tmp_path, 'run_id = "r"\ndomains = ["a"]\n[train]\nroundz = 3\n')

    with pytest.raises(ConfigError, match="unknown key train.'roundz'"):
        load_toml(CoordinatorConfig, path)


def test_load_rejects_wrong_type(tmp_path):
    path = _write(tmp_path, 'run_id = "r"\ndomains = ["a"]\n[train]\nrounds = "3"\n')

    with pytest.raises(ConfigError, match="train.rounds must be of type int"):
        load_toml(CoordinatorConfig, path)


def test_load_rejects_missing_required_key(tmp_path):
    path = _write(tmp_path, 'domain = "a"\n[tls]\ninsecure = true\n')

    with pytest.raises(ConfigError, match="missing required key 'data_dir'"):
        load_toml(ClientConfig, path)


def test_load_reports_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_toml(ClientConfig, tmp_path / "absent.toml")


def test_load_reports_invalid_toml(tmp_path):
    path = _write(tmp_path, "domain = \n")

    with pytest.raises(ConfigError, match="invalid TOML"):
        load_toml(ClientConfig, path)


def test_tls_files_required_unless_insecure(tmp_path):
    path = _write(tmp_path, 'domain = "a"\ndata_dir = "d"\n')

    with pytest.raises(ConfigError, match="tls.ca is missing"):
        load_toml(ClientConfig, path)


def test_model_config_checks_heads_divide_hidden_size():
    with pytest.raises(ConfigError, match=r"hidden_size \(30\).*n_heads \(4\)"):
        ModelConfig(hidden_size=30, n_heads=4)


def test_model_config_checks_subspaces_divide_text_dim():
    with pytest.raises(ConfigError, match=r"text_dim \(384\).*n_subspaces \(5\)"):
        ModelConfig(n_subspaces=5)


def test_coordinator_config_checks_min_domains():
    with pytest.raises(ConfigError, match="min_domains must be between 1 and"):
        CoordinatorConfig(run_id="r", domains=("a",), min_domains=2)


def test_coordinator_config_rejects_duplicate_domains():
    with pytest.raises(ConfigError, match="duplicates"):
        CoordinatorConfig(run_id="r", domains=("a", "a"))


def test_load_overrides_satisfy_checks(tmp_path):
    path = _write(tmp_path, 'domain = "a"\ndata_dir = "d"\n')

    config = load_toml(ClientConfig, path, {"tls": {"insecure": True}})

    assert config.tls.insecure


@pytest.mark.parametrize("name", ["Bad Name", "coordinator", "x" * 65, ""])
def test_client_config_rejects_invalid_domain(name):
    with pytest.raises(ConfigError, match="invalid domain"):
        ClientConfig(domain=name, data_dir=Path("d"), tls=TLSConfig(insecure=True))


def test_load_client_prompt_table(tmp_path):
    path = _write(
        tmp_path,
        'domain = "books"\ndata_dir = "data"\n[tls]\ninsecure = true\n'
        "[prompt]\nepochs = 3\nuser_prompt = false\n",
    )

    config = load_toml(ClientConfig, path)

    assert config.prompt == PromptConfig(epochs=3, user_prompt=False)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": -1}, r"prompt.epochs must be >= 0, got -1"),
        ({"learning_rate": 0.0}, r"prompt.learning_rate must be positive, got 0.0"),
        (
            {"epochs": 2, "domain_prompt": False, "user_prompt": False},
            r"prompt.epochs is 2 but .* both false",
        ),
        (
            {"finetune_global": ("encoder", "prompts")},
            r"unknown group 'prompts' in prompt.finetune_global",
        ),
        (
            {"finetune_learning_rate": -1.0},
            r"prompt.finetune_learning_rate must be positive, got -1.0",
        ),
    ],
)
def test_prompt_config_rejects_bad_values(values, message):
    with pytest.raises(ConfigError, match=message):
        PromptConfig(**values)


def test_load_client_prompt_finetune_groups(tmp_path):
    path = _write(
        tmp_path,
        'domain = "books"\ndata_dir = "data"\n[tls]\ninsecure = true\n'
        '[prompt]\nfinetune_global = ["encoder", "input_norm"]\n'
        "finetune_learning_rate = 0.0005\n",
    )

    config = load_toml(ClientConfig, path)

    assert config.prompt.finetune_global == ("encoder", "input_norm")
    assert config.prompt.finetune_learning_rate == 0.0005


def test_prompt_config_allows_no_branch_without_tuning():
    config = PromptConfig(epochs=0, domain_prompt=False, user_prompt=False)

    assert config.epochs == 0


@pytest.mark.parametrize("serial", ["5F3A", "0x5f3a", "5f:3a"])
def test_revocation_serial_forms(serial):
    from common.config import RevocationConfig, parse_serial

    assert parse_serial(serial) == 0x5F3A
    assert RevocationConfig(serials=(serial,)).serials == (serial,)


@pytest.mark.parametrize("serial", ["", "xyz", "0", "-5"])
def test_revocation_serial_must_be_positive_hex(serial):
    from common.config import ConfigError, RevocationConfig

    with pytest.raises(ConfigError, match="invalid certificate serial"):
        RevocationConfig(serials=(serial,))
