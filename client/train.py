"""Local training and full-ranking evaluation of a domain's sequence recommender."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from client.metrics import ranking_metrics, target_ranks
from common.config import TrainConfig
from common.model import SequenceRecommender

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    """Outcome of evaluating one set of (history, target) cases.

    Attributes
    ----------
    metrics : dict[str, float]
        Ranking metrics from ``ranking_metrics``, e.g. ``recall@10`` and ``ndcg@10``.
    loss : float
        Mean cross entropy (natural log) of the target item over users.
    ranks : LongTensor, shape [n_cases], optional
        Rank of each case's target, 1 = top, for paired comparisons per user.
        Equality of two results ignores it, because the metrics follow from it.
    """

    metrics: dict[str, float]
    loss: float
    ranks: Tensor | None = field(default=None, compare=False)


def _pad_right(rows: Sequence[Sequence[int]]) -> Tensor:
    """Stack rows into a LongTensor [B, L], L the longest row, padded with 0."""
    length = max(len(row) for row in rows)
    batch = torch.zeros(len(rows), length, dtype=torch.long)
    for index, row in enumerate(rows):
        batch[index, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return batch


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def make_batches(
    sequences: Sequence[Sequence[int]],
    max_seq_len: int,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield next-item training pairs in batches.

    For a sequence s the input is ``s[:-1]`` and the target is ``s[1:]``, each cut to
    its last ``max_seq_len`` items, so target j is the item that follows input j.
    Sequences with fewer than 2 items give no pair and are skipped.

    Parameters
    ----------
    sequences : sequence of sequences of int
        Chronological internal item indices, 1-based.
    max_seq_len : int
        Maximum input length.
    batch_size : int
        Maximum number of sequences per batch; the last batch may be smaller.
    generator : torch.Generator, optional
        When given, the sequence order is shuffled with it; otherwise the input order
        is kept.

    Yields
    ------
    items, targets : LongTensor, shape [B, L]
        Right-padded with 0, where L is the longest input of the batch
        (at most ``max_seq_len``).
    """
    _check_positive(max_seq_len=max_seq_len, batch_size=batch_size)
    usable = [sequence for sequence in sequences if len(sequence) >= 2]
    if generator is None:
        order = list(range(len(usable)))
    else:
        order = torch.randperm(len(usable), generator=generator).tolist()

    for start in range(0, len(order), batch_size):
        chosen = [usable[index] for index in order[start : start + batch_size]]
        inputs = [list(sequence[:-1])[-max_seq_len:] for sequence in chosen]
        targets = [list(sequence[1:])[-max_seq_len:] for sequence in chosen]
        yield _pad_right(inputs), _pad_right(targets)


class BatchShareLoss(Protocol):
    """Loss of this process's share of each batch, for data-parallel training.

    ``client.distributed.ShardedLoss`` implements it. ``train_epochs`` calls it
    in place of ``model.loss`` with the whole batch, and every process receives
    the same batches in the same order.
    """

    def __call__(self, items: Tensor, targets: Tensor) -> Tensor:
        """Return the loss to backpropagate for this process's rows of the batch."""
        ...

    def epoch_mean(self, total_loss: float, total_targets: int) -> float:
        """Return the epoch's mean loss per position over all processes.

        ``total_loss`` sums ``float(loss) * positions`` over the epoch's batches,
        where ``positions`` counts the nonzero targets of the whole batch.
        """
        ...


def train_epochs(
    model: SequenceRecommender,
    sequences: Sequence[Sequence[int]],
    train: TrainConfig,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    generator: torch.Generator,
    *,
    max_grad_norm: float | None = None,
    share_loss: BatchShareLoss | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> float:
    """Train ``model`` for ``epochs`` passes over the domain's sequences.

    Each pass shuffles the sequences with ``generator`` and takes one optimizer step
    per batch of ``train.batch_size`` sequences, on the model's device. The model is
    left in training mode.

    Parameters
    ----------
    max_grad_norm : float, optional
        When given, the gradient norm over all parameters is clipped to this value
        before each step. The default None does not clip.
    share_loss : BatchShareLoss, optional
        When given, this process trains only its share of each batch, as one of
        several data-parallel processes. The default None trains on every row.
    on_epoch : callable, optional
        Called after each epoch with the epoch number (1-based) and its mean loss,
        for example to advance a progress bar.

    Returns
    -------
    float
        Mean cross entropy per predicted position over the last epoch.

    Raises
    ------
    ValueError
        If epochs is not positive, max_grad_norm is not positive, or no sequence has
        2 or more items.
    """
    _check_positive(epochs=epochs)
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm}")
    max_seq_len = model.config.max_seq_len
    device = model.item_codes.device
    model.train()

    epoch_loss = float("nan")
    for epoch in range(epochs):
        started = time.perf_counter()
        total_loss = 0.0
        total_targets = 0
        batches = make_batches(sequences, max_seq_len, train.batch_size, generator)
        for items, targets in batches:
            items = items.to(device)
            targets = targets.to(device)
            optimizer.zero_grad(set_to_none=True)
            if share_loss is None:
                loss = model.loss(items, targets)
            else:
                loss = share_loss(items, targets)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()

            # Weight by the number of predicted positions so the epoch mean is per
            # position, not per batch.
            counted = int((targets != 0).sum())
            total_loss += float(loss.detach()) * counted
            total_targets += counted

        if total_targets == 0:
            raise ValueError(
                "sequences has no sequence with 2 or more items, so there is nothing "
                "to train on"
            )
        if share_loss is None:
            epoch_loss = total_loss / total_targets
        else:
            epoch_loss = share_loss.epoch_mean(total_loss, total_targets)
        logger.debug(
            "epoch=%d loss=%.4f positions=%d seconds=%.2f",
            epoch,
            epoch_loss,
            total_targets,
            time.perf_counter() - started,
        )
        if on_epoch is not None:
            on_epoch(epoch + 1, epoch_loss)
    return epoch_loss


def evaluate(
    model: SequenceRecommender,
    cases: Sequence[tuple[Sequence[int], int]],
    max_seq_len: int,
    batch_size: int = 256,
    *,
    ks: Sequence[int] = (10, 50),
) -> EvalResult:
    """Rank every item of the domain for each case and summarize the target ranks.

    The model runs in eval mode under ``torch.no_grad()``, and its previous mode is
    restored afterwards. Histories longer than ``max_seq_len`` keep their last
    ``max_seq_len`` items. Items in the history are not masked from the ranking, as
    in RecBole's full-sort evaluation; see ``target_ranks`` for the tie rule.

    Parameters
    ----------
    cases : sequence of (history, target)
        History: the user's earlier internal item indices, chronological, at least
        one. Target: the internal index of the item to predict, in 1..N.
    max_seq_len : int
        Maximum history length fed to the model.
    batch_size : int
        Number of cases scored at once.
    ks : sequence of int
        Cut-offs of the ranking metrics.

    Returns
    -------
    EvalResult

    Raises
    ------
    ValueError
        If cases is empty, a history is empty, or a target is outside 1..N.
    """
    _check_positive(max_seq_len=max_seq_len, batch_size=batch_size)
    if len(cases) == 0:
        raise ValueError("cases is empty, but evaluate needs at least one case")
    empty = [index for index, (history, _) in enumerate(cases) if len(history) == 0]
    if empty:
        raise ValueError(
            f"cases {empty[:5]} have an empty history; drop them before evaluating"
        )

    device = model.item_codes.device
    was_training = model.training
    model.eval()
    all_ranks: list[Tensor] = []
    total_loss = 0.0
    try:
        with torch.no_grad():
            for start in range(0, len(cases), batch_size):
                chunk = cases[start : start + batch_size]
                histories = [list(history)[-max_seq_len:] for history, _ in chunk]
                items = _pad_right(histories).to(device)
                lengths = torch.tensor([len(h) for h in histories], device=device)
                targets = torch.tensor([t for _, t in chunk], device=device)

                scores = model.scores(model.last_output(items, lengths))
                all_ranks.append(target_ranks(scores, targets).cpu())
                total_loss += float(F.cross_entropy(scores, targets, reduction="sum"))
    finally:
        model.train(was_training)

    ranks = torch.cat(all_ranks)
    return EvalResult(
        metrics=ranking_metrics(ranks, ks), loss=total_loss / len(cases), ranks=ranks
    )


def make_optimizer(
    model: SequenceRecommender, train: TrainConfig
) -> torch.optim.Optimizer:
    """Build AdamW over the parameters of ``model`` that require gradients.

    With ``train.weight_decay == 0`` (the default) AdamW performs the same updates as
    Adam. Decay, when set, applies to every trainable tensor, norms and embeddings
    included. Freeze the global part first (``requires_grad_(False)``) to tune only
    the local prompt.

    Raises
    ------
    ValueError
        If no parameter of the model requires gradients.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("model has no trainable parameters, so unfreeze some first")
    return torch.optim.AdamW(
        parameters, lr=train.learning_rate, weight_decay=train.weight_decay
    )
