"""A domain's model across rounds: what it uploads and what it saves."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from client.data import Split
from client.session import (
    DomainModel,
    best_evaluation,
    domain_seed,
    item_code_table,
    load_saved_model,
)
from common.config import ModelConfig, PromptConfig, TrainConfig
from common.model import GlobalEncoder, global_parameter_names, global_state_dict

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
# The whole global part stays frozen, so prompt tuning must leave it bit-identical.
PROMPT = PromptConfig(epochs=2, learning_rate=0.01, finetune_global=())


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
    codes = item_code_table(embeddings, centroids)
    return DomainModel(CONFIG, TRAIN, split, codes, 7, PROMPT)


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
    for name, tensor in domain_model.model.local_part.state_dict().items():
        assert torch.equal(local_before[name], tensor), name


def test_upload_after_tuning_excludes_prompts(domain_model):
    n_global = sum(p.numel() for p in GlobalEncoder(CONFIG).state_dict().values())
    domain_model.tune_prompts(1)
    domain_model.model.set_prompt_active(True)
    local_before = {
        k: v.clone() for k, v in domain_model.model.local_part.state_dict().items()
    }

    vector = domain_model.train_round()

    assert vector.shape == (n_global + 1,)
    changed = [
        name
        for name, tensor in domain_model.model.local_part.state_dict().items()
        if not torch.equal(local_before[name], tensor)
    ]
    assert "domain_prompt.prompt" in changed
    assert "user_prompt.item_embedding.weight" in changed


def test_tune_prompts_freezes_global_part(domain_model):
    before = global_state_dict(domain_model.model)
    prompt_before = domain_model.model.local_part.domain_prompt.prompt.detach().clone()

    history = domain_model.tune_prompts(2)

    after = global_state_dict(domain_model.model)
    assert len(history) == PROMPT.epochs + 1
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name
    domain_model.model.set_prompt_active(True)
    prompt_after = domain_model.model.local_part.domain_prompt.prompt
    assert not torch.equal(prompt_after, prompt_before)
    assert all(p.requires_grad for p in domain_model.model.global_part.parameters())


def test_finetune_changes_only_chosen_groups(domain_model):
    domain_model.prompt_config = PromptConfig(
        epochs=2,
        learning_rate=0.01,
        finetune_global=("encoder",),
        finetune_learning_rate=0.01,
    )
    before = global_state_dict(domain_model.model)

    history = domain_model.tune_prompts(2)

    after = global_state_dict(domain_model.model)
    assert best_evaluation(history) is not history[0]
    encoder = [name for name in before if name.startswith("encoder.")]
    assert encoder
    assert any(not torch.equal(after[name], before[name]) for name in encoder)
    for name, tensor in before.items():
        if not name.startswith("encoder."):
            assert torch.equal(after[name], tensor), name
    assert all(p.requires_grad for p in domain_model.model.global_part.parameters())


def test_upload_after_finetune_is_global_only(domain_model):
    n_global = sum(p.numel() for p in GlobalEncoder(CONFIG).state_dict().values())
    domain_model.prompt_config = PromptConfig(
        epochs=1,
        learning_rate=0.01,
        finetune_global=("code_embedding", "encoder"),
        finetune_learning_rate=0.01,
    )
    domain_model.tune_prompts(1)
    domain_model.model.set_prompt_active(True)
    local_before = {
        k: v.clone() for k, v in domain_model.model.local_part.state_dict().items()
    }
    global_before = global_state_dict(domain_model.model)

    vector = domain_model.train_round()

    global_after = global_state_dict(domain_model.model)
    expected = np.concatenate(
        [
            (global_after[name] - global_before[name]).double().flatten().numpy() * 10.0
            for name in global_parameter_names(CONFIG)
        ]
    )
    assert vector.shape == (n_global + 1,)
    assert np.array_equal(vector[:-1], expected)
    assert any(
        not torch.equal(local_before[k], v)
        for k, v in domain_model.model.local_part.state_dict().items()
    )


def test_tune_prompts_keeps_best_candidate(domain_model):
    history = domain_model.tune_prompts(2)

    best = best_evaluation(history)
    now = domain_model.evaluate(2)

    assert best.valid["ndcg@10"] >= history[0].valid["ndcg@10"]
    assert now.valid == best.valid
    assert all(result.round == 2 for result in history)


def test_tune_prompts_needs_epochs(domain_model):
    domain_model.prompt_config = PromptConfig(epochs=0)

    with pytest.raises(ValueError, match=r"prompt.epochs >= 1 \(got 0\)"):
        domain_model.tune_prompts(1)


def test_saved_model_reloads_same_scores(domain_model, tmp_path):
    path = tmp_path / "model.safetensors"
    domain_model.train_round()
    domain_model.tune_prompts(1)
    domain_model.model.set_prompt_active(True)
    domain_model.keep_if_best(domain_model.evaluate(1), path, {"domain": "d"})
    items = torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7]])
    lengths = torch.tensor([3, 4])

    loaded, metadata = load_saved_model(path)
    domain_model.model.eval()
    expected = domain_model.model.scores(domain_model.model.last_output(items, lengths))
    scores = loaded.scores(loaded.last_output(items, lengths))

    assert metadata["domain"] == "d"
    assert bool(loaded.prompt_active)
    assert loaded.local_part is not None
    assert loaded.local_part.user_prompt is not None
    assert torch.equal(scores, expected)


def test_load_saved_model_without_config(tmp_path):
    path = tmp_path / "old.safetensors"
    save_file({"item_codes": torch.zeros(2, 4, dtype=torch.long)}, path)

    with pytest.raises(ValueError, match="no model_config metadata"):
        load_saved_model(path)


def test_load_global_replaces_global_part_only(domain_model):
    names = global_parameter_names(CONFIG)
    arrays = {
        f"model/{n}": np.zeros(v.shape, np.float32)
        for n, v in domain_model.model.global_part.state_dict().items()
    }
    prompt = domain_model.model.local_part.domain_prompt.prompt
    prompt_before = prompt.detach().clone()

    domain_model.load_global(arrays)

    state = domain_model.model.global_part.state_dict()
    assert all(torch.count_nonzero(state[n]) == 0 for n in names)
    assert torch.equal(prompt, prompt_before)


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
