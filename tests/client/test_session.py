"""A domain's model across rounds: what it uploads and what it saves."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from client.data import Split
from client.session import DomainModel, domain_seed, item_code_table
from common.config import ModelConfig, TrainConfig
from common.model import GlobalEncoder, global_parameter_names

CONFIG = ModelConfig(
    hidden_size=16,
    n_layers=1,
    inner_size=32,
    n_subspaces=4,
    n_centroids=8,
    text_dim=8,
    n_prompt_words=2,
)
TRAIN = TrainConfig(rounds=2, local_epochs=1, batch_size=4)


@pytest.fixture
def domain_model() -> DomainModel:
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((12, 8)).astype(np.float32)
    centroids = rng.standard_normal((4, 8, 2)).astype(np.float32)
    sequences = tuple(
        tuple(int(i) for i in rng.integers(1, 13, size=6)) for _ in range(10)
    )
    split = Split(
        train=tuple(s[:-2] for s in sequences),
        valid=tuple((s[:-2], s[-2]) for s in sequences),
        test=tuple((s[:-1], s[-1]) for s in sequences),
    )
    return DomainModel(CONFIG, TRAIN, split, item_code_table(embeddings, centroids), 7)


def test_item_code_table_pads_row_zero():
    rng = np.random.default_rng(1)
    table = item_code_table(
        rng.standard_normal((5, 8)).astype(np.float32),
        rng.standard_normal((4, 8, 2)).astype(np.float32),
    )

    assert table.shape == (6, 4)
    assert table[0].tolist() == [0, 0, 0, 0]


def test_train_round_uploads_only_weighted_global_delta(domain_model):
    n_global = sum(p.numel() for p in GlobalEncoder(CONFIG).state_dict().values())
    local_before = {
        k: v.clone() for k, v in domain_model.model.local_part.state_dict().items()
    }

    vector = domain_model.train_round()

    assert vector.shape == (n_global + 1,)
    assert vector[-1] == 10.0
    assert np.any(vector[:-1] != 0)
    changed = any(
        not torch.equal(local_before[k], v)
        for k, v in domain_model.model.local_part.state_dict().items()
    )
    assert changed, "local prompt parameters should train too"


def test_load_global_replaces_global_part_only(domain_model):
    names = global_parameter_names(CONFIG)
    arrays = {
        f"model/{n}": np.zeros(v.shape, np.float32)
        for n, v in domain_model.model.global_part.state_dict().items()
    }
    prompt_before = domain_model.model.local_part.prompt.detach().clone()

    domain_model.load_global(arrays)

    state = domain_model.model.global_part.state_dict()
    assert all(torch.count_nonzero(state[n]) == 0 for n in names)
    assert torch.equal(domain_model.model.local_part.prompt, prompt_before)


def test_keep_if_best_saves_only_improvements(domain_model, tmp_path):
    path = tmp_path / "model.safetensors"
    first = domain_model.evaluate(0)
    first.valid["ndcg@10"] = 0.5
    worse = domain_model.evaluate(1)
    worse.valid["ndcg@10"] = 0.4

    saved_first = domain_model.keep_if_best(first, path, {"domain": "d"})
    saved_worse = domain_model.keep_if_best(worse, path, {"domain": "d"})

    assert saved_first
    assert not saved_worse
    assert "item_codes" in load_file(path)


def test_domain_seed_differs_by_domain():
    assert domain_seed(0, "books") != domain_seed(0, "films")
    assert domain_seed(3, "books") == domain_seed(3, "books")
