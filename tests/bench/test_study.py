"""The quality study's variants on a tiny generated dataset, and its statistics."""

import random

import numpy as np
import pytest
import torch

from bench.quality import (
    export_for_recbole,
    markdown_table,
    run_sparse,
    run_study,
    subsample_users,
)
from bench.simulation import Domain
from bench.study import (
    VARIANTS,
    StudyConfig,
    ndcg_at,
    paired_comparison,
    run_seed,
    sign_test_p,
    summarize,
    validation_curves,
)
from client.split import Split
from common.config import ModelConfig, PromptConfig, TrainConfig

MODEL = ModelConfig(
    hidden_size=16,
    n_layers=1,
    n_heads=2,
    inner_size=32,
    dropout=0.1,
    max_seq_len=20,
    n_prompt_words=4,
    n_subspaces=4,
    n_centroids=8,
    text_dim=16,
)
TRAIN = TrainConfig(
    rounds=3, local_epochs=2, batch_size=16, learning_rate=0.005, kmeans_iterations=2
)
PROMPT = PromptConfig(epochs=2, learning_rate=0.005)


def make_domain(name: str, seed: int, n_items: int = 25, n_users: int = 40) -> Domain:
    """Users walk a fixed item cycle with small skips; embeddings mark the position."""
    rng = random.Random(seed)
    sequences = []
    for _ in range(n_users):
        position = rng.randrange(n_items)
        sequence = []
        for _ in range(rng.randint(8, 14)):
            position = (position + rng.choice((1, 1, 1, 2))) % n_items
            sequence.append(position + 1)
        sequences.append(tuple(sequence))
    angles = np.arange(n_items) * 2 * np.pi / n_items
    features = np.stack([np.cos(angles * (k + 1)) for k in range(8)], axis=1)
    noise = np.random.default_rng(seed).normal(0, 0.1, (n_items, 8))
    embeddings = np.concatenate([features, features + noise], axis=1).astype(np.float32)
    split = Split(
        train=tuple(s[:-2] for s in sequences),
        valid=tuple((s[:-2], s[-2]) for s in sequences),
        test=tuple((s[:-1], s[-1]) for s in sequences),
    )
    return Domain(name, split, embeddings)


@pytest.fixture(scope="module")
def study_run():
    torch.set_num_threads(1)
    domains = [
        make_domain(name, i) for i, name in enumerate(("books", "films", "tools"))
    ]
    config = StudyConfig(MODEL, TRAIN, PROMPT, (0,))
    return domains, run_seed(domains, config, 0)


def test_run_seed_runs_every_variant(study_run):
    _, run = study_run

    assert list(run) == list(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_metrics_in_unit_interval(study_run, variant):
    _, run = study_run

    for domain, history in run[variant].histories.items():
        for result in history:
            for split in (result.valid, result.test):
                assert all(0.0 <= value <= 1.0 for value in split.values()), domain


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_beats_untrained_model(study_run, variant):
    _, run = study_run

    for domain in run[variant].histories:
        untrained = run["federated"].histories[domain][0].test["ndcg@10"]
        if variant in ("local_only", "pooled"):
            untrained = run[variant].histories[domain][0].test["ndcg@10"]
        best = run[variant].best(domain).test["ndcg@10"]
        assert best > untrained, f"{variant} {domain}: {best} <= {untrained}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_ranks_match_best_test_metric(study_run, variant):
    _, run = study_run

    for domain, ranks in run[variant].ranks.items():
        expected = run[variant].best(domain).test["ndcg@10"]
        assert ndcg_at(ranks).mean() == pytest.approx(expected, abs=1e-9)


def test_prompt_variants_start_from_federated_best(study_run):
    _, run = study_run

    for domain in run["federated"].histories:
        federated = run["federated"].best(domain)
        for variant in ("domain_prompt", "full"):
            start = run[variant].histories[domain][0]
            assert start.valid["ndcg@10"] == pytest.approx(federated.valid["ndcg@10"])
            assert len(run[variant].histories[domain]) == PROMPT.epochs + 1


def test_summarize_and_markdown(study_run):
    domains, run = study_run

    summary = summarize([run])
    table = markdown_table("tiny", summary, domains)
    curves = validation_curves(run)

    assert set(summary["variants"]) == set(VARIANTS)
    assert summary["variants"]["full"]["books"]["ndcg@10"]["std"] == 0.0
    assert len(summary["comparisons"]) == 5 * len(domains)
    assert "| books (40) | ndcg@10 |" in table
    assert len(curves["full"]["books"]) == TRAIN.rounds + 1 + PROMPT.epochs


def test_sign_test_p_values():
    assert sign_test_p(np.array([0.0, 0.0])) == 1.0
    assert sign_test_p(np.array([1.0, -1.0])) == 1.0
    assert sign_test_p(np.ones(10)) == pytest.approx(2 / 1024)


def test_paired_comparison_of_shifted_scores():
    baseline = np.linspace(0.0, 0.5, 50)

    result = paired_comparison(baseline + 0.1, baseline)

    assert result["difference"] == pytest.approx(0.1)
    assert result["ci95_low"] == pytest.approx(0.1)
    assert result["relative"] == pytest.approx(0.1 / 0.25)
    assert result["sign_test_p"] < 1e-10


def test_paired_comparison_rejects_length_mismatch():
    with pytest.raises(ValueError, match="equal-length"):
        paired_comparison(np.zeros(3), np.zeros(4))


def test_subsample_users_keeps_fraction():
    domain = make_domain("books", 0)

    sparse = subsample_users(domain, 0.2, seed=1)

    assert len(sparse.split.train) == 8
    assert len(sparse.split.test) == 8
    assert set(sparse.split.test) <= set(domain.split.test)


def test_export_for_recbole_keeps_split(tmp_path):
    domain = make_domain("books", 0)

    export_for_recbole([domain], tmp_path)

    lines = (tmp_path / "books" / "books.inter").read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    first_user = [row for row in rows if row[0] == "u0"]
    history, target = domain.split.test[0]
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    assert [int(row[1]) for row in first_user] == [*history, target]
    assert [float(row[2]) for row in first_user] == list(range(1, len(history) + 2))
    assert int(first_user[-2][1]) == domain.split.valid[0][1]


def test_run_study_parallel_matches_serial():
    domains = [make_domain(name, i) for i, name in enumerate(("books", "films"))]
    train = TrainConfig(rounds=1, local_epochs=1, batch_size=16, kmeans_iterations=2)
    config = StudyConfig(MODEL, train, PROMPT, (0, 1), ("local_only", "federated"))

    serial, serial_curves = run_study(domains, config, jobs=1)
    parallel, parallel_curves = run_study(domains, config, jobs=2)

    assert parallel == serial
    assert parallel_curves == serial_curves


def test_run_sparse_only_named_domain():
    domains = [
        make_domain(name, i, n_users=20) for i, name in enumerate(("books", "films"))
    ]
    train = TrainConfig(rounds=1, local_epochs=1, batch_size=16, kmeans_iterations=2)
    config = StudyConfig(MODEL, train, PromptConfig(epochs=1), (0,))

    results = run_sparse(domains, config, ["films"])

    assert list(results) == ["films"]
    # 20% of the domain's 20 users.
    assert results["films"]["users"] == 4
    assert results["films"]["comparison"]["variant"] == "full"
