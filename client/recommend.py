"""Top-k recommendations from a domain's saved model for its users or a given history."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from client.data import load_domain, read_item_texts
from client.inference import (
    Catalogue,
    ModelFileError,
    build_catalogue,
    read_saved_model,
)
from client.itemcodes import Encoder, TextEncoder
from common.model import SequenceRecommender

logger = logging.getLogger(__name__)

DEFAULT_K = 10
# Sequence length passed to load_domain, so that it keeps whole histories. Seen
# items are then all items a user interacted with, not only the last few.
_WHOLE_HISTORY = 2**62


class UnknownUserError(ValueError):
    """The requested user is not among the domain's users."""


class UnknownItemError(ValueError):
    """An item of a given history is not in the domain's catalogue."""


@dataclass(frozen=True)
class RecommendedItem:
    """One ranked item: its 1-based rank, external id, text and model score."""

    rank: int
    item_id: str
    text: str
    score: float


@dataclass(frozen=True)
class Recommendations:
    """The top-k items for one user or one history, best first.

    ``user_id`` is None for a history request, and ``history`` is the item ids the
    ranking was computed from, oldest first.
    """

    domain: str
    user_id: str | None
    history: tuple[str, ...]
    items: tuple[RecommendedItem, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form that `fedcdr-client recommend --format json` prints."""
        return {
            "domain": self.domain,
            "user_id": self.user_id,
            "history": list(self.history),
            "items": [
                {
                    "rank": item.rank,
                    "item_id": item.item_id,
                    "text": item.text,
                    "score": item.score,
                }
                for item in self.items
            ],
        }


@dataclass(frozen=True)
class UserBatch:
    """Top-k item ids and scores of a batch of users, for batch export."""

    user_ids: list[str]
    item_ids: list[list[str]]
    scores: list[list[float]]


class Recommender:
    """Rank a domain's catalogue with its saved model.

    New items (in the catalogue but not in the model) are scored through their
    codes like every item. The user prompt reads only learned item-ID
    embeddings, so it averages over the history items the model was trained on
    and skips new ones. A history of new items only gets a zero user prompt.

    Parameters
    ----------
    model
        The saved model, in eval mode.
    catalogue
        The recommendable items, see ``Catalogue``.
    domain
        Domain name, echoed in every result.
    histories
        Each known user's whole chronological history, as catalogue indices.
    """

    def __init__(
        self,
        model: SequenceRecommender,
        catalogue: Catalogue,
        domain: str,
        histories: dict[str, tuple[int, ...]],
    ) -> None:
        self.model = model
        self.catalogue = catalogue
        self.domain = domain
        self.histories = histories
        with torch.no_grad():
            self._vectors = model.global_part.item_vectors(catalogue.codes)

    @property
    def user_ids(self) -> list[str]:
        """Ids of the known users, in the order of the domain's data."""
        return list(self.histories)

    def for_user(
        self, user_id: str, k: int = DEFAULT_K, include_seen: bool = False
    ) -> Recommendations:
        """Recommend for a known user from the whole interaction history.

        Raises
        ------
        UnknownUserError
            If ``user_id`` is not a user of the domain.
        ValueError
            If ``k`` is below 1.
        """
        history = self.histories.get(user_id)
        if history is None:
            raise UnknownUserError(
                f"user {user_id!r} is not a user of domain {self.domain!r}: the "
                "interaction file has no row for it, or fewer than 5 after 5-core "
                "filtering; check the id, or recommend from the user's items with a "
                "history request (--history ITEM_ID,...)"
            )
        return self._recommend(user_id, history, k, include_seen)

    def for_history(
        self, item_ids: Sequence[str], k: int = DEFAULT_K, include_seen: bool = False
    ) -> Recommendations:
        """Recommend for a chronological sequence of item ids not in the data.

        Raises
        ------
        UnknownItemError
            If an item id is not in the catalogue.
        ValueError
            If ``item_ids`` is empty or ``k`` is below 1.
        """
        if isinstance(item_ids, str):
            raise TypeError("item_ids must be a sequence of item ids, got one string")
        if not item_ids:
            raise ValueError("the history is empty; give at least one item id")
        history = tuple(self._catalogue_index(item) for item in item_ids)
        return self._recommend(None, history, k, include_seen)

    def all_users(
        self, k: int = DEFAULT_K, include_seen: bool = False, batch_size: int = 256
    ) -> Iterator[UserBatch]:
        """Yield the top-k of every known user, ``batch_size`` users at a time.

        Memory for scores is ``batch_size * N'`` floats, whatever the user count.
        """
        _check_k(k)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        users = self.user_ids
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            ranked = self.top_k([self.histories[u] for u in batch], k, include_seen)
            ids = self.catalogue.item_ids
            yield UserBatch(
                user_ids=batch,
                item_ids=[[ids[i - 1] for i, _ in row] for row in ranked],
                scores=[[score for _, score in row] for row in ranked],
            )

    def top_k(
        self, histories: Sequence[Sequence[int]], k: int, include_seen: bool
    ) -> list[list[tuple[int, float]]]:
        """Rank the catalogue for each history of catalogue indices.

        Returns
        -------
        list of list of (catalogue index, score)
            Best first, ``min(k, available)`` entries per history, where
            ``available`` excludes the history's own items unless ``include_seen``.
        """
        _check_k(k)
        scores = self.scores(histories)
        if not include_seen:
            for row, history in enumerate(histories):
                scores[row, list(set(history))] = float("-inf")
        values, indices = torch.topk(scores, min(k, self.catalogue.n_items), dim=1)
        return [
            [
                (int(i), float(v))
                for v, i in zip(row_values, row_indices, strict=True)
                if v != float("-inf")
            ]
            for row_values, row_indices in zip(
                values.tolist(), indices.tolist(), strict=True
            )
        ]

    def scores(self, histories: Sequence[Sequence[int]]) -> Tensor:
        """Score every catalogue item for each history of catalogue indices.

        Histories longer than ``max_seq_len`` keep their last ``max_seq_len`` items,
        as in training.

        Returns
        -------
        Tensor, shape [B, N' + 1]
            Column 0 (padding) is -inf.
        """
        max_len = self.model.config.max_seq_len
        rows = [torch.tensor(list(h)[-max_len:], dtype=torch.long) for h in histories]
        items = pad_sequence(rows, batch_first=True, padding_value=0)
        lengths = torch.tensor([len(row) for row in rows])
        with torch.no_grad():
            hidden = self.model.global_part(items, self._vectors)
            local_part = self.model.local_part
            if local_part is not None and bool(self.model.prompt_active):
                # New items map to 0, so the user prompt skips them like padding.
                hidden = local_part(hidden, self.catalogue.model_index[items])
            index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
            representation = hidden.gather(1, index).squeeze(1)
            return self.model.score_items(representation, self._vectors)

    def _recommend(
        self,
        user_id: str | None,
        history: tuple[int, ...],
        k: int,
        include_seen: bool,
    ) -> Recommendations:
        (ranked,) = self.top_k([history], k, include_seen)
        catalogue = self.catalogue
        return Recommendations(
            domain=self.domain,
            user_id=user_id,
            history=tuple(catalogue.item_ids[i - 1] for i in history),
            items=tuple(
                RecommendedItem(
                    rank=rank,
                    item_id=catalogue.item_ids[index - 1],
                    text=catalogue.item_texts[index - 1],
                    score=score,
                )
                for rank, (index, score) in enumerate(ranked, start=1)
            ),
        )

    def _catalogue_index(self, item_id: str) -> int:
        index = self.catalogue.index.get(item_id)
        if index is None:
            raise UnknownItemError(
                f"item {item_id!r} of the history is not in the item file of domain "
                f"{self.domain!r}, or its row has no text; check the id, or add the "
                "item's row with its text to the item file (new items are coded "
                "when the recommender starts)"
            )
        return index


def open_recommender(
    model_path: Path,
    data_dir: Path,
    cache_dir: Path,
    encoder_factory: Callable[[], Encoder] = TextEncoder,
) -> Recommender:
    """Load a domain's saved model, data and catalogue into a ``Recommender``.

    Users and their histories come from ``load_domain`` (5-core filtered, as in
    training); the catalogue is every item of the item file with text, see
    ``build_catalogue``.

    Raises
    ------
    ModelFileError
        If the model file is missing, unreadable or does not fit the data.
    DataError
        If the data folder is invalid.
    """
    # NOTE: the histories of all users are held in memory, as in training.
    data = load_domain(data_dir, max_seq_len=_WHOLE_HISTORY)
    saved = read_saved_model(model_path, data.item_ids)
    if saved.domain is not None and saved.domain != data.name:
        raise ModelFileError(
            f"model file {model_path} was trained for domain {saved.domain!r}, but "
            f"the data folder {data_dir} contains domain {data.name!r}; pass the "
            "model and the data folder of the same domain"
        )
    catalogue = build_catalogue(
        saved, read_item_texts(data_dir), cache_dir, encoder_factory
    )
    to_catalogue = [catalogue.index[item] for item in data.item_ids]
    histories = {
        user: tuple(to_catalogue[i - 1] for i in sequence)
        for user, sequence in zip(data.user_ids, data.sequences, strict=True)
    }
    logger.info(
        "recommender ready domain=%s users=%d items=%d new_items=%d model=%s",
        data.name,
        len(histories),
        catalogue.n_items,
        catalogue.n_new,
        model_path,
    )
    return Recommender(saved.model, catalogue, data.name, histories)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
