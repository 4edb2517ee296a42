"""Tests of batching, local training and full-ranking evaluation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from client.metrics import ranking_metrics, target_ranks
from client.train import (
    EvalResult,
    evaluate,
    make_batches,
    make_optimizer,
    train_epochs,
)
from common.config import ModelConfig, TrainConfig
from common.model import SequenceRecommender

N_ITEMS = 12
CONFIG = ModelConfig(
    hidden_size=32,
    n_layers=2,
    n_heads=2,
    inner_size=64,
    dropout=0.0,
    max_seq_len=8,
    n_prompt_words=4,
    prompt_heads=2,
    scoring="dot",
    n_subspaces=4,
    n_centroids=8,
    text_dim=32,
)
TRAIN = TrainConfig(batch_size=8, learning_rate=5e-3)


def make_model(config: ModelConfig = CONFIG, seed: int = 0) -> SequenceRecommender:
    # Subspaces 0 and 1 spell out the item index in base M, so no two items share
    # all their codes. The other subspaces are random.
    generator = torch.Generator().manual_seed(seed)
    shape = (N_ITEMS + 1, config.n_subspaces)
    codes = torch.randint(0, config.n_centroids, shape, generator=generator)
    index = torch.arange(N_ITEMS + 1)
    codes[:, 0] = index % config.n_centroids
    codes[:, 1] = index // config.n_centroids
    torch.manual_seed(seed)
    return SequenceRecommender(config, codes)


def cycle_sequences(count: int, length: int) -> list[tuple[int, ...]]:
    """Sequences that walk the cycle 1, 2, ..., N, 1, ... from different starts."""
    return [
        tuple((start + step) % N_ITEMS + 1 for step in range(length))
        for start in range(count)
    ]


def test_make_batches_shapes_and_alignment() -> None:
    sequences = [(1, 2, 3, 4), (5, 6), (7, 8, 9)]

    batches = list(make_batches(sequences, max_seq_len=10, batch_size=2))
    items, targets = batches[0]

    assert len(batches) == 2
    assert items.tolist() == [[1, 2, 3], [5, 0, 0]]
    assert targets.tolist() == [[2, 3, 4], [6, 0, 0]]
    assert batches[1][0].tolist() == [[7, 8]]
    assert batches[1][1].tolist() == [[8, 9]]
    assert items.dtype == torch.long
    assert targets.dtype == torch.long


def test_make_batches_truncates_to_last_items() -> None:
    sequence = tuple(range(1, 11))

    items, targets = next(make_batches([sequence], max_seq_len=4, batch_size=1))

    assert items.tolist() == [[6, 7, 8, 9]]
    assert targets.tolist() == [[7, 8, 9, 10]]


def test_make_batches_padding_matches_targets() -> None:
    sequences = cycle_sequences(5, 6) + [(1, 2), (3, 4, 5)]

    for items, targets in make_batches(sequences, max_seq_len=8, batch_size=3):
        assert torch.equal(items == 0, targets == 0)


def test_make_batches_skips_short_sequences() -> None:
    sequences = [(1,), (), (2, 3)]

    batches = list(make_batches(sequences, max_seq_len=8, batch_size=8))

    assert len(batches) == 1
    assert batches[0][0].tolist() == [[2]]


def test_make_batches_shuffles_with_generator() -> None:
    sequences = [(index, index + 1) for index in range(1, 41)]

    def first_items(seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        batches = make_batches(sequences, 8, 40, generator)
        return next(batches)[0][:, 0].tolist()

    assert first_items(0) == first_items(0)
    assert first_items(0) != first_items(1)
    assert sorted(first_items(0)) == list(range(1, 41))


def test_make_batches_keeps_order_without_generator() -> None:
    sequences = [(index, index + 1) for index in range(1, 6)]

    items, _ = next(make_batches(sequences, max_seq_len=8, batch_size=5))

    assert items[:, 0].tolist() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("max_seq_len", "batch_size"), [(0, 4), (4, 0), (-1, 4), (4, 2.5)]
)
def test_make_batches_rejects_bad_sizes(max_seq_len: int, batch_size: int) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        list(make_batches([(1, 2)], max_seq_len, batch_size))


def test_train_epochs_lowers_loss() -> None:
    model = make_model()
    sequences = cycle_sequences(24, 9)
    optimizer = make_optimizer(model, TRAIN)
    generator = torch.Generator().manual_seed(0)

    first = train_epochs(model, sequences, TRAIN, optimizer, 1, generator)
    last = train_epochs(model, sequences, TRAIN, optimizer, 15, generator)

    assert first > math.log(N_ITEMS) * 0.5
    assert last < 0.5 * first


def test_train_epochs_with_clipping_lowers_loss() -> None:
    model = make_model()
    sequences = cycle_sequences(24, 9)
    optimizer = make_optimizer(model, TRAIN)
    generator = torch.Generator().manual_seed(0)

    first = train_epochs(
        model, sequences, TRAIN, optimizer, 1, generator, max_grad_norm=1.0
    )
    last = train_epochs(
        model, sequences, TRAIN, optimizer, 15, generator, max_grad_norm=1.0
    )

    assert last < 0.5 * first


def test_train_epochs_is_reproducible() -> None:
    losses = []
    for _ in range(2):
        model = make_model(dataclasses.replace(CONFIG, dropout=0.2))
        optimizer = make_optimizer(model, TRAIN)
        torch.manual_seed(5)
        generator = torch.Generator().manual_seed(0)
        losses.append(
            train_epochs(model, cycle_sequences(16, 9), TRAIN, optimizer, 2, generator)
        )

    assert losses[0] == losses[1]


def test_train_epochs_sets_train_mode() -> None:
    model = make_model()
    model.eval()
    optimizer = make_optimizer(model, TRAIN)

    train_epochs(model, [(1, 2, 3)], TRAIN, optimizer, 1, torch.Generator())

    assert model.training


def test_train_epochs_rejects_no_pairs() -> None:
    model = make_model()
    optimizer = make_optimizer(model, TRAIN)

    with pytest.raises(ValueError, match="2 or more items"):
        train_epochs(model, [(1,), (2,)], TRAIN, optimizer, 1, torch.Generator())


@pytest.mark.parametrize(("epochs", "max_grad_norm"), [(0, None), (1, 0.0)])
def test_train_epochs_rejects_bad_arguments(
    epochs: int, max_grad_norm: float | None
) -> None:
    model = make_model()
    optimizer = make_optimizer(model, TRAIN)

    with pytest.raises(ValueError):
        train_epochs(
            model,
            [(1, 2)],
            TRAIN,
            optimizer,
            epochs,
            torch.Generator(),
            max_grad_norm=max_grad_norm,
        )


def test_evaluate_trained_model_ranks_next_item_first() -> None:
    model = make_model()
    optimizer = make_optimizer(model, TRAIN)
    generator = torch.Generator().manual_seed(0)
    train_epochs(model, cycle_sequences(24, 9), TRAIN, optimizer, 25, generator)
    # History ..., k gives target k + 1 on the cycle.
    cases = [(sequence[:-1], sequence[-1]) for sequence in cycle_sequences(12, 6)]

    result = evaluate(model, cases, CONFIG.max_seq_len, ks=(1, 10))

    assert isinstance(result, EvalResult)
    assert result.metrics["recall@1"] == 1.0
    assert result.metrics["ndcg@10"] == 1.0
    assert result.loss < 0.5


def test_evaluate_matches_manual_ranking() -> None:
    model = make_model(seed=3)
    cases = [((1, 2, 3), 4), ((5,), 9), ((7, 8, 9, 10, 11), 2), ((2, 2), 12)]

    result = evaluate(model, cases, CONFIG.max_seq_len, batch_size=3)
    model.eval()
    with torch.no_grad():
        items = torch.tensor(
            [[1, 2, 3, 0, 0], [5, 0, 0, 0, 0], [7, 8, 9, 10, 11], [2, 2, 0, 0, 0]]
        )
        lengths = torch.tensor([3, 1, 5, 2])
        targets = torch.tensor([4, 9, 2, 12])
        scores = model.scores(model.last_output(items, lengths))
        expected = ranking_metrics(target_ranks(scores, targets))
        expected_loss = float(torch.nn.functional.cross_entropy(scores, targets))

    assert result.metrics == pytest.approx(expected)
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)


def test_evaluate_truncates_long_histories() -> None:
    model = make_model(seed=1)
    long_history = tuple(range(1, 13))
    short_history = long_history[-CONFIG.max_seq_len :]

    long_result = evaluate(model, [(long_history, 3)], CONFIG.max_seq_len)
    short_result = evaluate(model, [(short_history, 3)], CONFIG.max_seq_len)

    assert long_result.metrics == short_result.metrics
    assert long_result.loss == pytest.approx(short_result.loss)


def test_evaluate_restores_training_mode() -> None:
    model = make_model()
    model.train()

    evaluate(model, [((1, 2), 3)], CONFIG.max_seq_len)

    assert model.training


def test_evaluate_is_deterministic_despite_dropout() -> None:
    model = make_model(dataclasses.replace(CONFIG, dropout=0.5))
    cases = [((1, 2, 3), 4), ((6, 7), 8)]

    first = evaluate(model, cases, CONFIG.max_seq_len)
    second = evaluate(model, cases, CONFIG.max_seq_len)

    assert first == second


@pytest.mark.parametrize(
    ("cases", "message"),
    [([], "empty"), ([((), 3)], "empty history"), ([((1, 2), 0)], "1..N")],
)
def test_evaluate_rejects_bad_cases(
    cases: list[tuple[tuple[int, ...], int]], message: str
) -> None:
    model = make_model()

    with pytest.raises(ValueError, match=message):
        evaluate(model, cases, CONFIG.max_seq_len)


def test_make_optimizer_skips_frozen_parameters() -> None:
    model = make_model()
    model.global_part.requires_grad_(False)

    optimizer = make_optimizer(model, TRAIN)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}

    assert optimized == {id(p) for p in model.local_part.parameters()}
    assert optimizer.param_groups[0]["lr"] == TRAIN.learning_rate


def test_make_optimizer_rejects_fully_frozen_model() -> None:
    model = make_model()
    model.requires_grad_(False)

    with pytest.raises(ValueError, match="no trainable parameters"):
        make_optimizer(model, TRAIN)


def test_prompt_tuning_leaves_global_part_unchanged() -> None:
    model = make_model()
    model.set_prompt_active(True)
    model.global_part.requires_grad_(False)
    before = {k: v.clone() for k, v in model.global_part.state_dict().items()}
    optimizer = make_optimizer(model, TRAIN)

    train_epochs(model, cycle_sequences(8, 9), TRAIN, optimizer, 1, torch.Generator())

    for name, tensor in model.global_part.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_train_epochs_reports_each_epoch() -> None:
    model = make_model()
    optimizer = make_optimizer(model, TRAIN)
    generator = torch.Generator().manual_seed(0)
    reports: list[tuple[int, float]] = []

    last = train_epochs(
        model,
        cycle_sequences(24, 9),
        TRAIN,
        optimizer,
        3,
        generator,
        on_epoch=lambda epoch, loss: reports.append((epoch, loss)),
    )

    assert [epoch for epoch, _ in reports] == [1, 2, 3]
    assert reports[-1][1] == last
    assert all(math.isfinite(loss) for _, loss in reports)
