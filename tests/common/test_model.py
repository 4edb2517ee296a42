"""Tests of the sequence recommender and its global/local parameter split."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from common.config import ModelConfig
from common.model import (
    DomainPrompt,
    GlobalEncoder,
    LocalPrompt,
    SequenceRecommender,
    UserPrompt,
    global_parameter_names,
    global_state_dict,
    load_global_state_dict,
)

N_ITEMS = 20
CONFIG = ModelConfig(
    hidden_size=32,
    n_layers=2,
    n_heads=2,
    inner_size=64,
    dropout=0.1,
    max_seq_len=10,
    n_prompt_words=4,
    prompt_heads=2,
    n_subspaces=4,
    n_centroids=8,
    text_dim=32,
)


def make_codes(n_items: int = N_ITEMS, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(
        0, CONFIG.n_centroids, (n_items + 1, CONFIG.n_subspaces), generator=generator
    )
    codes[0] = 0
    return codes


def make_model(
    config: ModelConfig = CONFIG,
    seed: int = 0,
    *,
    domain_prompt: bool = True,
    user_prompt: bool = False,
) -> SequenceRecommender:
    torch.manual_seed(seed)
    return SequenceRecommender(
        config, make_codes(), domain_prompt=domain_prompt, user_prompt=user_prompt
    )


def make_items() -> tuple[torch.Tensor, torch.Tensor]:
    items = torch.tensor(
        [
            [3, 5, 7, 2, 0, 0],
            [1, 2, 3, 4, 5, 6],
            [9, 0, 0, 0, 0, 0],
        ]
    )
    lengths = torch.tensor([4, 6, 1])
    return items, lengths


def test_global_encoder_output_shapes() -> None:
    torch.manual_seed(0)
    encoder = GlobalEncoder(CONFIG)
    items, _ = make_items()

    vectors = encoder.item_vectors(make_codes())
    hidden = encoder(items, vectors)

    assert vectors.shape == (N_ITEMS + 1, CONFIG.hidden_size)
    assert hidden.shape == (3, 6, CONFIG.hidden_size)


def test_item_vectors_padding_item_is_zero() -> None:
    torch.manual_seed(0)
    encoder = GlobalEncoder(CONFIG)

    vectors = encoder.item_vectors(make_codes())

    assert torch.count_nonzero(vectors[0]) == 0


def test_item_vectors_mean_of_code_rows() -> None:
    torch.manual_seed(0)
    encoder = GlobalEncoder(CONFIG)
    codes = make_codes()
    block = CONFIG.n_centroids + 1

    vectors = encoder.item_vectors(codes)
    rows = [k * block + int(codes[5, k]) + 1 for k in range(CONFIG.n_subspaces)]
    expected = encoder.code_embedding.weight[rows].mean(dim=0)

    torch.testing.assert_close(vectors[5], expected)


def test_code_padding_rows_zero_at_init() -> None:
    torch.manual_seed(0)
    encoder = GlobalEncoder(CONFIG)
    block = CONFIG.n_centroids + 1

    padding_rows = encoder.code_embedding.weight[::block]

    assert padding_rows.shape[0] == CONFIG.n_subspaces
    assert torch.count_nonzero(padding_rows) == 0


def test_code_padding_rows_contribute_nothing() -> None:
    model = make_model()
    model.eval()
    items, _ = make_items()
    before_vectors = model.global_part.item_vectors(model.item_codes)
    before_output = model.sequence_output(items)

    with torch.no_grad():
        model.global_part.code_embedding.weight[:: CONFIG.n_centroids + 1] = 5.0
    after_vectors = model.global_part.item_vectors(model.item_codes)
    after_output = model.sequence_output(items)

    torch.testing.assert_close(after_vectors, before_vectors)
    torch.testing.assert_close(after_output, before_output)


def test_code_padding_rows_get_no_gradient() -> None:
    model = make_model()
    items, _ = make_items()
    targets = torch.roll(items, -1, dims=1).clamp(max=N_ITEMS)

    model.loss(items, targets).backward()
    gradient = model.global_part.code_embedding.weight.grad

    assert gradient is not None
    assert torch.count_nonzero(gradient[:: CONFIG.n_centroids + 1]) == 0


@pytest.mark.parametrize(
    ("domain_prompt", "user_prompt"), [(True, False), (False, True), (True, True)]
)
def test_local_prompt_output_shape(domain_prompt: bool, user_prompt: bool) -> None:
    torch.manual_seed(0)
    prompt = LocalPrompt(
        CONFIG, N_ITEMS, domain_prompt=domain_prompt, user_prompt=user_prompt
    )
    items, _ = make_items()

    output = prompt(torch.randn(3, 6, CONFIG.hidden_size), items)
    branches = 1 + int(domain_prompt) + int(user_prompt)

    assert output.shape == (3, 6, CONFIG.hidden_size)
    assert prompt.fusion.in_features == branches * CONFIG.hidden_size


def test_domain_prompt_shapes() -> None:
    torch.manual_seed(0)
    prompt = DomainPrompt(CONFIG)

    output = prompt(torch.randn(3, 6, CONFIG.hidden_size))

    assert prompt.prompt.shape == (CONFIG.n_prompt_words, CONFIG.hidden_size)
    assert prompt.attention.num_heads == CONFIG.prompt_heads
    assert prompt.attention.out_proj.weight.shape == (
        CONFIG.hidden_size,
        CONFIG.hidden_size,
    )
    assert output.shape == (3, 6, CONFIG.hidden_size)


def test_domain_prompt_rejects_indivisible_heads() -> None:
    # ModelConfig rejects this too, so bypass its check to test the module's own.
    config = dataclasses.replace(CONFIG)
    object.__setattr__(config, "prompt_heads", 5)

    with pytest.raises(ValueError, match=r"hidden_size \(32\).*prompt_heads \(5\)"):
        DomainPrompt(config)


def test_user_prompt_is_causal_mean_of_history() -> None:
    torch.manual_seed(0)
    prompt = UserPrompt(CONFIG, N_ITEMS)
    items, _ = make_items()
    table = prompt.item_embedding.weight.detach()

    output = prompt(items).detach()

    torch.testing.assert_close(output[0, 1], (table[3] + table[5]) / 2)
    torch.testing.assert_close(output[0, 5], table[[3, 5, 7, 2]].mean(dim=0))
    torch.testing.assert_close(output[2, 4], table[9])
    assert torch.count_nonzero(table[0]) == 0


def test_local_prompt_starts_as_normalized_identity() -> None:
    torch.manual_seed(0)
    prompt = LocalPrompt(CONFIG, N_ITEMS, domain_prompt=True, user_prompt=True)
    prompt.eval()
    hidden = torch.randn(3, 6, CONFIG.hidden_size)
    items, _ = make_items()

    output = prompt(hidden, items)

    expected = torch.nn.functional.layer_norm(hidden, (CONFIG.hidden_size,))
    torch.testing.assert_close(output, expected)


def test_local_prompt_needs_a_branch() -> None:
    with pytest.raises(ValueError, match="domain_prompt or user_prompt"):
        LocalPrompt(CONFIG, N_ITEMS, domain_prompt=False, user_prompt=False)


def test_inactive_prompt_leaves_output_to_global_part() -> None:
    model = make_model(user_prompt=True)
    model.eval()
    assert model.local_part is not None
    torch.nn.init.normal_(model.local_part.fusion.weight)
    items, _ = make_items()
    vectors = model.global_part.item_vectors(model.item_codes)

    hidden = model.global_part(items, vectors)
    inactive = model.sequence_output(items)
    model.set_prompt_active(True)
    active = model.sequence_output(items)

    torch.testing.assert_close(inactive, hidden)
    torch.testing.assert_close(active, model.local_part(hidden, items))
    assert not torch.allclose(active, hidden)


def test_set_prompt_active_without_local_part() -> None:
    model = make_model(domain_prompt=False)

    with pytest.raises(ValueError, match="no prompt branch"):
        model.set_prompt_active(True)

    assert model.local_part is None


def test_active_prompt_gets_gradient() -> None:
    model = make_model(user_prompt=True)
    model.set_prompt_active(True)
    items, _ = make_items()
    targets = torch.roll(items, -1, dims=1).clamp(max=N_ITEMS)

    model.loss(items, targets).backward()
    assert model.local_part is not None
    fusion_gradient = model.local_part.fusion.weight.grad

    assert fusion_gradient is not None
    assert torch.count_nonzero(fusion_gradient[:, CONFIG.hidden_size :]) > 0


def test_user_prompt_rejects_item_count_change() -> None:
    model = make_model(user_prompt=True)

    with pytest.raises(ValueError, match="sized for 20"):
        model.set_item_codes(make_codes(n_items=N_ITEMS + 3))


def test_recommender_output_shapes() -> None:
    model = make_model()
    items, lengths = make_items()

    sequence = model.sequence_output(items)
    last = model.last_output(items, lengths)
    scores = model.scores(last)
    loss = model.loss(items, torch.roll(items, -1, dims=1))

    assert sequence.shape == (3, 6, CONFIG.hidden_size)
    assert last.shape == (3, CONFIG.hidden_size)
    assert scores.shape == (3, N_ITEMS + 1)
    assert model.scores(sequence).shape == (3, 6, N_ITEMS + 1)
    assert loss.shape == ()


def test_last_output_picks_last_real_position() -> None:
    model = make_model()
    model.eval()
    items, lengths = make_items()

    sequence = model.sequence_output(items)
    last = model.last_output(items, lengths)

    for row, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(last[row], sequence[row, length - 1])


@pytest.mark.parametrize("lengths", [[0, 1, 1], [1, 7, 1], [1, 1]])
def test_last_output_rejects_bad_lengths(lengths: list[int]) -> None:
    model = make_model()
    items, _ = make_items()

    with pytest.raises(ValueError, match="lengths"):
        model.last_output(items, torch.tensor(lengths))


def test_causal_mask_hides_later_items() -> None:
    model = make_model()
    model.eval()
    items, _ = make_items()
    changed = items.clone()
    changed[1, 4] = 11
    changed[0, 5] = 8

    with torch.no_grad():
        before = model.sequence_output(items)
        after = model.sequence_output(changed)

    torch.testing.assert_close(after[1, :4], before[1, :4])
    torch.testing.assert_close(after[0, :5], before[0, :5])
    assert not torch.allclose(after[1, 4], before[1, 4])


def test_padding_does_not_change_real_positions() -> None:
    model = make_model()
    model.eval()
    short = torch.tensor([[3, 5, 7]])
    padded = torch.tensor([[3, 5, 7, 0, 0, 0, 0]])

    with torch.no_grad():
        without_padding = model.sequence_output(short)
        with_padding = model.sequence_output(padded)

    torch.testing.assert_close(with_padding[:, :3], without_padding)


def test_outputs_finite_with_padding() -> None:
    model = make_model()
    items = torch.tensor([[4, 0, 0, 0, 0, 0, 0, 0, 0, 0]])

    output = model.sequence_output(items)
    scores = model.scores(output)

    assert bool(torch.isfinite(output).all())
    assert bool(torch.isfinite(scores[..., 1:]).all())


@pytest.mark.parametrize("scoring", ["cosine", "dot"])
def test_scores_padding_column_is_minus_inf(scoring: str) -> None:
    model = make_model(dataclasses.replace(CONFIG, scoring=scoring))
    items, lengths = make_items()

    scores = model.scores(model.last_output(items, lengths))

    assert bool(torch.isneginf(scores[:, 0]).all())
    assert bool(torch.isfinite(scores[:, 1:]).all())


def test_scores_cosine_is_scaled_cosine() -> None:
    config = dataclasses.replace(CONFIG, scoring="cosine", temperature=0.5)
    model = make_model(config)
    representation = torch.randn(2, CONFIG.hidden_size)

    scores = model.scores(representation)
    vectors = model.global_part.item_vectors(model.item_codes)
    expected = (
        torch.nn.functional.cosine_similarity(
            representation[:, None, :], vectors[None, 1:, :], dim=-1
        )
        / 0.5
    )

    torch.testing.assert_close(scores[:, 1:], expected)
    assert float(scores[:, 1:].detach().abs().max()) <= 1.0 / 0.5 + 1e-5


def test_scores_dot_is_dot_product() -> None:
    model = make_model(dataclasses.replace(CONFIG, scoring="dot"))
    representation = torch.randn(2, CONFIG.hidden_size)

    scores = model.scores(representation)
    vectors = model.global_part.item_vectors(model.item_codes)

    torch.testing.assert_close(scores[:, 1:], representation @ vectors[1:].T)


def test_loss_ignores_zero_targets() -> None:
    model = make_model()
    model.eval()
    items = torch.tensor([[3, 5, 7, 0]])
    targets = torch.tensor([[5, 7, 2, 0]])

    with torch.no_grad():
        loss = model.loss(items, targets)
        scores = model.scores(model.sequence_output(items))[0, :3]
        expected = torch.nn.functional.cross_entropy(scores, targets[0, :3])

    torch.testing.assert_close(loss, expected)


def test_loss_rejects_all_zero_targets() -> None:
    model = make_model()
    items = torch.tensor([[3, 0]])

    with pytest.raises(ValueError, match="no nonzero"):
        model.loss(items, torch.zeros_like(items))


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (torch.tensor([[N_ITEMS + 1, 2]]), "0..N"),
        (torch.tensor([[-1, 2]]), "0..N"),
        (torch.ones(1, CONFIG.max_seq_len + 1, dtype=torch.long), "max_seq_len"),
        (torch.tensor([1, 2]), "2-D"),
        (torch.tensor([[1.0, 2.0]]), "integer"),
    ],
)
def test_sequence_output_rejects_bad_items(items: torch.Tensor, message: str) -> None:
    model = make_model()

    with pytest.raises(ValueError, match=message):
        model.sequence_output(items)


@pytest.mark.parametrize(
    ("codes", "error"),
    [
        (
            torch.zeros(N_ITEMS + 1, CONFIG.n_subspaces + 1, dtype=torch.long),
            ValueError,
        ),
        (torch.full((N_ITEMS + 1, CONFIG.n_subspaces), CONFIG.n_centroids), ValueError),
        (torch.zeros(1, CONFIG.n_subspaces, dtype=torch.long), ValueError),
        (torch.zeros(N_ITEMS + 1, CONFIG.n_subspaces), TypeError),
    ],
)
def test_item_codes_rejected(codes: torch.Tensor, error: type[Exception]) -> None:
    with pytest.raises(error, match="item_codes"):
        SequenceRecommender(CONFIG, codes)


def test_set_item_codes_replaces_buffer() -> None:
    model = make_model()
    new_codes = make_codes(seed=1)

    model.set_item_codes(new_codes)

    assert torch.equal(model.item_codes, new_codes)
    assert model.item_codes.dtype == torch.long


def test_set_item_codes_changes_item_vectors() -> None:
    model = make_model()
    before = model.global_part.item_vectors(model.item_codes)

    model.set_item_codes(make_codes(seed=1))
    after = model.global_part.item_vectors(model.item_codes)

    assert not torch.allclose(after[1:], before[1:])


def test_model_build_is_deterministic() -> None:
    first = make_model(seed=3).state_dict()
    second = make_model(seed=3).state_dict()
    other = make_model(seed=4).state_dict()

    assert list(first) == list(second)
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert not torch.equal(
        first["global_part.code_embedding.weight"],
        other["global_part.code_embedding.weight"],
    )


def test_global_parameter_names_match_encoder() -> None:
    torch.manual_seed(0)
    encoder = GlobalEncoder(CONFIG)

    names = global_parameter_names(CONFIG)

    assert names == [name for name, _ in encoder.named_parameters()]
    assert names[:4] == [
        "code_embedding.weight",
        "position_embedding.weight",
        "input_norm.weight",
        "input_norm.bias",
    ]
    assert sum(".self_attn.in_proj_weight" in name for name in names) == 2


def test_global_parameter_names_draw_no_random_numbers() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)

    torch.manual_seed(0)
    global_parameter_names(CONFIG)
    drawn = torch.rand(3)

    assert torch.equal(drawn, expected)


@pytest.mark.parametrize("active", [False, True])
def test_global_state_dict_excludes_both_prompts(active: bool) -> None:
    model = make_model(user_prompt=True)
    model.set_prompt_active(active)
    assert model.local_part is not None

    state = global_state_dict(model)

    assert list(state) == global_parameter_names(CONFIG)
    assert all("prompt" not in name for name in state)
    assert all("item_embedding" not in name for name in state)
    assert sum(v.numel() for v in state.values()) == sum(
        p.numel() for p in model.global_part.parameters()
    )


def test_global_state_dict_contains_only_global_part() -> None:
    model = make_model()

    state = global_state_dict(model)
    assert model.local_part is not None
    local_names = {name for name, _ in model.local_part.named_parameters()}

    assert list(state) == global_parameter_names(CONFIG)
    assert not local_names & set(state)
    assert "item_codes" not in state
    assert all(not name.startswith(("local_part.", "global_part.")) for name in state)


def test_global_state_dict_covers_every_global_parameter() -> None:
    model = make_model()

    state = global_state_dict(model)
    global_parameters = dict(model.global_part.named_parameters())
    local_count = sum(1 for _ in model.local_part.parameters())

    assert set(state) == set(global_parameters)
    assert len(list(model.parameters())) == len(global_parameters) + local_count


def test_global_state_dict_detached_copies() -> None:
    model = make_model()

    state = global_state_dict(model)
    state["code_embedding.weight"].add_(1.0)

    assert all(tensor.dtype == torch.float32 for tensor in state.values())
    assert all(tensor.device.type == "cpu" for tensor in state.values())
    assert all(not tensor.requires_grad for tensor in state.values())
    assert not torch.equal(
        state["code_embedding.weight"], model.global_part.code_embedding.weight
    )


def test_load_global_state_dict_round_trip() -> None:
    source = make_model(seed=1)
    target = make_model(seed=2)
    local_before = {k: v.clone() for k, v in target.local_part.state_dict().items()}

    load_global_state_dict(target, global_state_dict(source))
    loaded = global_state_dict(target)

    for name, tensor in global_state_dict(source).items():
        assert torch.equal(loaded[name], tensor), name
    for name, tensor in target.local_part.state_dict().items():
        assert torch.equal(tensor, local_before[name]), name


def test_load_global_state_dict_makes_equal_outputs() -> None:
    source = make_model(seed=1)
    target = make_model(seed=2)
    target.local_part.load_state_dict(source.local_part.state_dict())
    source.eval()
    target.eval()
    items, _ = make_items()

    load_global_state_dict(target, global_state_dict(source))

    torch.testing.assert_close(
        target.sequence_output(items), source.sequence_output(items)
    )


def test_load_global_state_dict_rejects_missing_name() -> None:
    model = make_model()
    state = global_state_dict(model)
    del state["input_norm.bias"]

    with pytest.raises(ValueError, match=r"missing \['input_norm.bias'\]"):
        load_global_state_dict(model, state)


def test_load_global_state_dict_rejects_unexpected_name() -> None:
    model = make_model()
    state = global_state_dict(model)
    state["local_part.prompt"] = torch.zeros(4, 32)

    with pytest.raises(ValueError, match=r"unexpected \['local_part.prompt'\]"):
        load_global_state_dict(model, state)


def test_load_global_state_dict_rejects_wrong_shape() -> None:
    model = make_model()
    state = global_state_dict(model)
    state["position_embedding.weight"] = torch.zeros(3, 32)

    with pytest.raises(ValueError, match="position_embedding.weight"):
        load_global_state_dict(model, state)


def test_load_global_state_dict_rejects_nan() -> None:
    model = make_model()
    state = global_state_dict(model)
    state["input_norm.weight"][0] = float("nan")

    with pytest.raises(ValueError, match="input_norm.weight"):
        load_global_state_dict(model, state)


def test_load_global_state_dict_changes_nothing_on_error() -> None:
    model = make_model(seed=1)
    before = global_state_dict(model)
    state = global_state_dict(make_model(seed=2))
    state["encoder.layers.1.norm2.bias"] = torch.zeros(5)

    with pytest.raises(ValueError):
        load_global_state_dict(model, state)

    for name, tensor in global_state_dict(model).items():
        assert torch.equal(tensor, before[name]), name


@pytest.mark.parametrize("scoring", ["cosine", "dot"])
def test_loss_decreases_on_repeated_pattern(scoring: str) -> None:
    config = dataclasses.replace(CONFIG, scoring=scoring, dropout=0.0)
    model = make_model(config)
    pattern = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1])
    items = pattern[:-1].repeat(8, 1)
    targets = pattern[1:].repeat(8, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    first = float(model.loss(items, targets).detach())
    for _ in range(60):
        optimizer.zero_grad()
        model.loss(items, targets).backward()
        optimizer.step()
    last = float(model.loss(items, targets).detach())

    assert last < 0.5 * first
    assert last < 0.5
