"""A coordinator and three domain clients as separate processes over mutual TLS."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DOMAINS = ("books", "films", "tools")
ROUNDS = 3


def _write_domain(root: Path, domain: str, seed: int) -> None:
    """Write a small domain whose users walk a fixed item cycle with small skips."""
    import random

    rng = random.Random(seed)
    folder = root / domain
    folder.mkdir(parents=True)
    n_items = 30
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(40):
        position = rng.randrange(n_items)
        for step in range(rng.randint(8, 14)):
            position = (position + rng.choice((1, 1, 1, 2))) % n_items
            lines.append(f"{domain}-u{user}\t{domain}-i{position}\t{1000 + step}")
    (folder / f"{domain}.inter").write_text("\n".join(lines) + "\n")
    items = ["item_id:token\ttitle:token_seq\tcategories:token_seq"]
    for item in range(n_items):
        items.append(
            f"{domain}-i{item}\t{domain} item number {item}\t{domain} group {item % 5}"
        )
    (folder / f"{domain}.item").write_text("\n".join(items) + "\n")


def _coordinator_config(path: Path, certs: Path) -> None:
    path.write_text(
        f'run_id = "integration"\ndomains = {json.dumps(list(DOMAINS))}\n'
        'listen = "127.0.0.1:0"\nstate_dir = "state"\n'
        "[tls]\n"
        f'ca = "{certs}/coordinator/ca.pem"\n'
        f'cert = "{certs}/coordinator/cert.pem"\n'
        f'key = "{certs}/coordinator/key.pem"\n'
        "[timeouts]\njoin_s = 300\nround_s = 120\nreport_s = 120\n"
        f"[train]\nrounds = {ROUNDS}\nlocal_epochs = 2\nkmeans_iterations = 3\n"
        "batch_size = 16\nlearning_rate = 0.005\n"
        "[model]\nhidden_size = 32\nn_layers = 1\ninner_size = 64\n"
        "n_subspaces = 8\nn_centroids = 16\nn_prompt_words = 4\n"
    )


# Three epochs run prompt tuning end to end. The default of 20 would only
# make the suite slower.
SHORT_PROMPT = "[prompt]\nepochs = 3\n"


def _client_config(
    path: Path, domain: str, data: Path, bundle: Path, ca: Path | None = None, **extra
) -> None:
    lines = [
        f'domain = "{domain}"',
        f'data_dir = "{data}"',
        f'work_dir = "{path.parent}"',
        *(f"{k} = {v}" for k, v in extra.items()),
        "[tls]",
        f'ca = "{ca or bundle / "ca.pem"}"',
        f'cert = "{bundle}/cert.pem"',
        f'key = "{bundle}/key.pem"',
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + SHORT_PROMPT)


def _wait_for(path: Path, process: subprocess.Popen, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        assert process.poll() is None, f"coordinator exited with {process.returncode}"
        time.sleep(0.1)
    raise AssertionError(f"{path} did not appear within {timeout_s} s")


@pytest.fixture(scope="module")
def federated_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    data = root / "data"
    for seed, domain in enumerate(DOMAINS):
        _write_domain(data, domain, seed)
    certs = root / "certs"
    subprocess.run(
        [
            BIN / "fedcdr-coordinator",
            "certs",
            "--out",
            certs,
            "--domains",
            ",".join(DOMAINS),
        ],
        check=True,
        capture_output=True,
    )
    strangers = root / "strangers"
    subprocess.run(
        [BIN / "fedcdr-coordinator", "certs", "--out", strangers, "--domains", "books"],
        check=True,
        capture_output=True,
    )
    (root / "coordinator").mkdir()
    _coordinator_config(root / "coordinator" / "coordinator.toml", certs)

    audit_log = root / "coordinator-audit.log"
    address_file = root / "coordinator.address"
    coordinator = subprocess.Popen(
        [
            sys.executable,
            HERE / "audited_coordinator.py",
            audit_log,
            "run",
            "--config",
            root / "coordinator" / "coordinator.toml",
            "--port-file",
            address_file,
        ],
        cwd=root / "coordinator",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = _wait_for(address_file, coordinator, 60)

    # Before the real clients start, while the coordinator waits for joins: one
    # stranger trusts the federation's CA but has a foreign certificate;
    # the other trusts only its own CA, so it rejects the coordinator.
    strangers_run = {}
    for name, ca in (("foreign-cert", certs / "ca" / "ca.pem"), ("foreign-ca", None)):
        stranger_config = root / "clients" / name / "client.toml"
        _client_config(
            stranger_config,
            "books",
            data / "books",
            strangers / "domains" / "books",
            ca=ca,
            connect_timeout_s=3.0,
        )
        strangers_run[name] = subprocess.run(
            [
                BIN / "fedcdr-client",
                "run",
                "--config",
                stranger_config,
                "--coordinator",
                address,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    clients = {}
    for domain in DOMAINS:
        config = root / "clients" / domain / "client.toml"
        _client_config(config, domain, data / domain, certs / "domains" / domain)
        clients[domain] = subprocess.Popen(
            [
                BIN / "fedcdr-client",
                "run",
                "--config",
                config,
                "--coordinator",
                address,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    outputs = {d: p.communicate(timeout=600)[0] for d, p in clients.items()}
    table, coordinator_log = coordinator.communicate(timeout=120)
    return {
        "root": root,
        "data": data,
        "state": root / "coordinator" / "state",
        "coordinator": coordinator,
        "coordinator_log": coordinator_log,
        "table": table,
        "clients": clients,
        "client_logs": outputs,
        "strangers": strangers_run,
        "audit_log": audit_log,
    }


def test_run_completes_every_process(federated_run):
    assert federated_run["coordinator"].returncode == 0, federated_run[
        "coordinator_log"
    ]
    for domain, process in federated_run["clients"].items():
        assert process.returncode == 0, federated_run["client_logs"][domain]


def test_clients_save_tuned_local_model(federated_run):
    from client.session import load_saved_model

    for domain in DOMAINS:
        path = federated_run["root"] / "clients" / domain / "model.safetensors"
        model, metadata = load_saved_model(path)

        assert metadata["domain"] == domain
        assert 0 <= int(metadata["round"]) <= ROUNDS
        assert model.local_part is not None
        assert "tuning the local prompt" in federated_run["client_logs"][domain]


def test_run_reports_every_round(federated_run):
    history = json.loads((federated_run["state"] / "history.json").read_text())

    for domain in DOMAINS:
        rounds = [entry["round"] for entry in history[domain]["federated"]]
        assert rounds == list(range(ROUNDS + 1))
        assert len(history[domain]["local_only"]) == ROUNDS + 1


def test_run_validation_loss_falls(federated_run):
    history = json.loads((federated_run["state"] / "history.json").read_text())

    for domain in DOMAINS:
        losses = [entry["valid_loss"] for entry in history[domain]["federated"]]
        assert losses[-1] < losses[0], f"{domain}: {losses}"


def test_run_writes_metrics_table_and_checkpoints(federated_run):
    metrics = json.loads((federated_run["state"] / "metrics.json").read_text())
    checkpoints = sorted((federated_run["state"] / "checkpoints").iterdir())

    assert sorted(metrics) == sorted(DOMAINS)
    for domain in DOMAINS:
        for model in ("federated", "local_only"):
            assert set(metrics[domain][model]) >= {
                "recall@10",
                "ndcg@10",
                "recall@50",
                "ndcg@50",
            }
        assert domain in federated_run["table"]
    assert [p.name for p in checkpoints] == [
        f"round-{r:04d}.safetensors" for r in range(1, ROUNDS + 1)
    ]
    assert (federated_run["state"] / "validation_ndcg.png").stat().st_size > 0


def test_client_saves_its_best_model(federated_run):
    for domain in DOMAINS:
        assert (
            federated_run["root"] / "clients" / domain / "model.safetensors"
        ).exists()


def test_recommend_from_saved_model(federated_run):
    domain = DOMAINS[0]
    config = federated_run["root"] / "clients" / domain / "client.toml"

    result = subprocess.run(
        [BIN / "fedcdr-client", "recommend", "--config", config]
        + ["--user", f"{domain}-u0", "-k", "5", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    items = [item["item_id"] for item in printed["items"]]
    assert printed["domain"] == domain
    assert len(items) == 5
    assert all(item.startswith(f"{domain}-i") for item in items)
    assert not set(items) & set(printed["history"])


def test_coordinator_never_reads_domain_data(federated_run):
    data_root = str(federated_run["data"])
    opened = federated_run["audit_log"].read_text().splitlines()

    assert opened, "the audit hook recorded nothing"
    touched = [line for line in opened if data_root in line.split("\t", 1)[1]]
    assert touched == []


def test_client_with_certificate_from_other_ca_is_rejected(federated_run):
    stranger = federated_run["strangers"]["foreign-cert"]

    assert stranger.returncode == 3, stranger.stdout + stranger.stderr
    assert "issued by the federation's CA" in stranger.stderr
    assert "Connection refused" not in stranger.stderr


def test_client_trusting_other_ca_rejects_coordinator(federated_run):
    stranger = federated_run["strangers"]["foreign-ca"]

    # The client sees either a failed handshake or a closed connection; both
    # messages point at the CA.
    assert stranger.returncode == 3, stranger.stdout + stranger.stderr
    assert "the federation's CA" in stranger.stderr
    assert "Connection refused" not in stranger.stderr


def test_strangers_never_join(federated_run):
    assert federated_run["coordinator_log"].count("domain joined domain=books") == 1


def test_each_client_trains_local_only_baseline_once(federated_run):
    for domain, log in federated_run["client_logs"].items():
        assert log.count("training the local-only baseline") == 1, domain


def test_every_upload_is_masked(federated_run):
    log = federated_run["coordinator_log"]

    # codebook-0, the k-means steps and the rounds, from each domain.
    assert log.count("masked input accepted") == len(DOMAINS) * (1 + 3 + ROUNDS)
    assert "upload accepted" not in log
