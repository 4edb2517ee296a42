"""Full-ranking metrics of next-item prediction: target rank, Recall@k and NDCG@k."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

logger = logging.getLogger(__name__)


def target_ranks(scores: Tensor, targets: Tensor) -> Tensor:
    """Rank each user's target item among all items of the domain.

    The rank is 1 + the number of items whose score is strictly greater than the
    target's score. Items tied with the target therefore rank behind it, which is
    the optimistic tie rule. Items the user saw earlier are not masked, as in
    RecBole's full-sort evaluation of sequential models, so a model may lose rank by
    scoring a history item above the target.

    Parameters
    ----------
    scores : Tensor, shape [B, N + 1]
        Scores of all items; column 0 is the padding item and should be -inf.
    targets : LongTensor, shape [B]
        Internal index of each user's target item, in 1..N.

    Returns
    -------
    LongTensor, shape [B]
        Ranks in 1..N.

    Raises
    ------
    ValueError
        If the shapes do not match, a target is outside 1..N or a score is NaN.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape [B, N + 1], got {list(scores.shape)}")
    if targets.dim() != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(
            f"targets must have shape [B] = [{scores.shape[0]}], "
            f"got {list(targets.shape)}"
        )
    n_items = scores.shape[1] - 1
    if targets.numel() and (targets.min() < 1 or targets.max() > n_items):
        raise ValueError(
            f"targets must be item indices in 1..N = 1..{n_items}, got values from "
            f"{int(targets.min())} to {int(targets.max())}"
        )
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contains NaN, so ranks are undefined")

    target_scores = scores.gather(1, targets.to(scores.device).view(-1, 1))
    return (scores > target_scores).sum(dim=1).to(torch.long) + 1


def ranking_metrics(ranks: Tensor, ks: Sequence[int] = (10, 50)) -> dict[str, float]:
    """Compute Recall@k and NDCG@k, averaged over users, from target ranks.

    Each user has one target, so recall@k is 1 when rank <= k and 0 otherwise, and
    ndcg@k is 1 / log2(rank + 1) when rank <= k and 0 otherwise.

    Parameters
    ----------
    ranks : LongTensor, shape [B]
        Output of ``target_ranks``, values >= 1.
    ks : sequence of int
        Cut-offs, each positive.

    Returns
    -------
    dict[str, float]
        Keys ``recall@k`` and ``ndcg@k`` for each k, in the order of ``ks``.

    Raises
    ------
    ValueError
        If ranks is empty or not 1-D, a rank is below 1, or a cut-off is not positive.
    """
    if ranks.dim() != 1 or ranks.numel() == 0:
        raise ValueError(
            f"ranks must be a non-empty 1-D tensor, got shape {list(ranks.shape)}"
        )
    if ranks.min() < 1:
        raise ValueError(f"ranks must be >= 1, got minimum {int(ranks.min())}")
    bad_ks = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if bad_ks or not ks:
        raise ValueError(f"ks must be positive integers, got {list(ks)}")

    ranks = ranks.to(torch.float64)
    gains = 1.0 / torch.log2(ranks + 1.0)
    metrics: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        metrics[f"recall@{k}"] = float(hit.to(torch.float64).mean())
        metrics[f"ndcg@{k}"] = float(torch.where(hit, gains, 0.0).mean())
    return metrics


def metric_names(ks: Sequence[int] = (10, 50)) -> list[str]:
    """List the keys that ``ranking_metrics`` returns for ``ks``, in order."""
    return [name for k in ks for name in (f"recall@{k}", f"ndcg@{k}")]
