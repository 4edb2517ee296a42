"""Tests of target ranks and Recall@k / NDCG@k against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from client.metrics import metric_names, ranking_metrics, target_ranks

INF = float("inf")


def test_target_ranks_hand_computed() -> None:
    scores = torch.tensor(
        [
            [-INF, 0.9, 0.1, 0.5, 0.3],
            [-INF, 0.9, 0.1, 0.5, 0.3],
            [-INF, 0.9, 0.1, 0.5, 0.3],
        ]
    )
    targets = torch.tensor([1, 4, 2])

    ranks = target_ranks(scores, targets)

    assert ranks.tolist() == [1, 3, 4]
    assert ranks.dtype == torch.long


def test_target_ranks_ties_count_in_target_favour() -> None:
    # Items 1, 2 and 3 tie at 0.5 and item 4 is above them, so each tied target
    # is beaten only by item 4 and all three rank 2.
    scores = torch.tensor([[-INF, 0.5, 0.5, 0.5, 0.8]]).repeat(3, 1)
    targets = torch.tensor([1, 2, 3])

    ranks = target_ranks(scores, targets)

    assert ranks.tolist() == [2, 2, 2]


def test_target_ranks_padding_column_never_outranks() -> None:
    scores = torch.tensor([[-INF, -5.0, -7.0]])

    ranks = target_ranks(scores, torch.tensor([2]))

    assert ranks.tolist() == [2]


def test_target_ranks_history_items_not_masked() -> None:
    # Item 2 was in the history, and it still counts when it scores above the target.
    scores = torch.tensor([[-INF, 0.1, 0.9, 0.5]])

    ranks = target_ranks(scores, torch.tensor([3]))

    assert ranks.tolist() == [2]


@pytest.mark.parametrize(
    ("scores", "targets", "message"),
    [
        (torch.zeros(2, 4), torch.tensor([0, 1]), "1..N"),
        (torch.zeros(2, 4), torch.tensor([1, 4]), "1..N"),
        (torch.zeros(2, 4), torch.tensor([1, 2, 3]), r"shape \[B\]"),
        (torch.zeros(4), torch.tensor([1]), r"\[B, N \+ 1\]"),
        (torch.tensor([[-INF, float("nan"), 1.0]]), torch.tensor([2]), "NaN"),
    ],
)
def test_target_ranks_rejects_bad_input(
    scores: torch.Tensor, targets: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        target_ranks(scores, targets)


@pytest.mark.parametrize(
    ("rank", "recall10", "ndcg10", "recall50", "ndcg50"),
    [
        (1, 1.0, 1.0, 1.0, 1.0),
        (3, 1.0, 0.5, 1.0, 0.5),  # 1 / log2(4) = 0.5
        (7, 1.0, 1 / 3, 1.0, 1 / 3),  # 1 / log2(8) = 1/3
        (10, 1.0, 1 / math.log2(11), 1.0, 1 / math.log2(11)),
        (11, 0.0, 0.0, 1.0, 1 / math.log2(12)),
        (15, 0.0, 0.0, 1.0, 0.25),  # 1 / log2(16) = 0.25
        (50, 0.0, 0.0, 1.0, 1 / math.log2(51)),
        (60, 0.0, 0.0, 0.0, 0.0),
    ],
)
def test_ranking_metrics_single_user(
    rank: int, recall10: float, ndcg10: float, recall50: float, ndcg50: float
) -> None:
    metrics = ranking_metrics(torch.tensor([rank]))

    assert metrics["recall@10"] == pytest.approx(recall10)
    assert metrics["ndcg@10"] == pytest.approx(ndcg10)
    assert metrics["recall@50"] == pytest.approx(recall50)
    assert metrics["ndcg@50"] == pytest.approx(ndcg50)


def test_ranking_metrics_mean_over_users() -> None:
    # Ranks 1, 3, 15, 60: recall@10 = 2/4, ndcg@10 = (1 + 0.5) / 4,
    # recall@50 = 3/4, ndcg@50 = (1 + 0.5 + 0.25) / 4.
    metrics = ranking_metrics(torch.tensor([1, 3, 15, 60]))

    assert metrics["recall@10"] == pytest.approx(0.5)
    assert metrics["ndcg@10"] == pytest.approx(0.375)
    assert metrics["recall@50"] == pytest.approx(0.75)
    assert metrics["ndcg@50"] == pytest.approx(0.4375)


def test_ranking_metrics_keys_in_order() -> None:
    metrics = ranking_metrics(torch.tensor([1, 2]))

    assert list(metrics) == ["recall@10", "ndcg@10", "recall@50", "ndcg@50"]
    assert list(metrics) == metric_names()


def test_ranking_metrics_custom_ks() -> None:
    metrics = ranking_metrics(torch.tensor([1, 2, 5]), ks=(1, 5))

    assert list(metrics) == ["recall@1", "ndcg@1", "recall@5", "ndcg@5"]
    assert metrics["recall@1"] == pytest.approx(1 / 3)
    assert metrics["recall@5"] == pytest.approx(1.0)


def test_ranking_metrics_values_are_floats() -> None:
    metrics = ranking_metrics(torch.tensor([2]))

    assert all(type(value) is float for value in metrics.values())


@pytest.mark.parametrize(
    ("ranks", "ks", "message"),
    [
        (torch.tensor([], dtype=torch.long), (10,), "non-empty"),
        (torch.tensor([[1]]), (10,), "1-D"),
        (torch.tensor([0, 1]), (10,), ">= 1"),
        (torch.tensor([1]), (0,), "ks"),
        (torch.tensor([1]), (), "ks"),
    ],
)
def test_ranking_metrics_rejects_bad_input(
    ranks: torch.Tensor, ks: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ranking_metrics(ranks, ks)


def test_ranks_and_metrics_end_to_end() -> None:
    # Target ranks 1 (item 2 is best) and 3 (items 1 and 3 beat item 4).
    scores = torch.tensor(
        [
            [-INF, 0.2, 0.9, 0.1, 0.0],
            [-INF, 0.8, 0.1, 0.7, 0.5],
        ]
    )

    metrics = ranking_metrics(target_ranks(scores, torch.tensor([2, 4])), ks=(1, 3))

    assert metrics["recall@1"] == pytest.approx(0.5)
    assert metrics["ndcg@1"] == pytest.approx(0.5)
    assert metrics["recall@3"] == pytest.approx(1.0)
    assert metrics["ndcg@3"] == pytest.approx(0.75)
