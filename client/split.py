"""Leave-one-out split of a domain's item sequences into train, validation and test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from client.data import DomainData


@dataclass(frozen=True)
class Split:
    """Leave-one-out split of a domain, one entry per user in user order.

    ``train[u]`` is the sequence without its last two items, ``valid[u]`` is
    ``(train[u], second-last item)`` and ``test[u]`` is ``(sequence without the last
    item, last item)``.
    """

    train: tuple[tuple[int, ...], ...]
    valid: tuple[tuple[tuple[int, ...], int], ...]
    test: tuple[tuple[tuple[int, ...], int], ...]


def split_leave_one_out(data: DomainData) -> Split:
    """Split every user's sequence: last item for test, second-last for validation.

    Raises
    ------
    ValueError
        If a sequence has fewer than 3 items, because validation needs history.
    """
    for user, seq in zip(data.user_ids, data.sequences, strict=True):
        if len(seq) < 3:
            raise ValueError(
                f"sequence of user {user!r} in domain {data.name!r} has {len(seq)} "
                "items but a leave-one-out split needs at least 3; load the domain "
                "with min_core >= 3"
            )
    return Split(
        train=tuple(seq[:-2] for seq in data.sequences),
        valid=tuple((seq[:-2], seq[-2]) for seq in data.sequences),
        test=tuple((seq[:-1], seq[-1]) for seq in data.sequences),
    )
