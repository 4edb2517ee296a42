"""A domain's saved model and item catalogue, loaded and checked for recommendations."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from client.itemcodes import Encoder, TextEncoder, assign_codes, embed_items
from client.session import ITEM_IDS_KEY, load_saved_model
from common.model import SequenceRecommender

logger = logging.getLogger(__name__)

CENTROIDS_KEY = "codebook.centroids"
# Share of (item, subspace) codes that must agree between the model's saved item
# codes and the codes its saved codebook gives the item texts now. Items re-encoded
# on another machine may flip a code that lies near a centroid boundary, while a
# model trained with another codebook agrees on about 1/M of the codes.
MIN_CODE_AGREEMENT = 0.9
# At most this many of the model's items are re-encoded for that check, so a
# start without the embedding cache stays short on a large catalogue.
CODE_CHECK_SAMPLE = 512

_RETRAIN_HINT = (
    "use the model.safetensors that `fedcdr-client run` wrote for this domain, "
    "or train the domain again"
)


class ModelFileError(ValueError):
    """The saved model file is missing, unreadable, or does not fit the domain."""


@dataclass(frozen=True)
class SavedModel:
    """A model written by ``DomainModel.keep_if_best``, with what ranking needs.

    ``item_ids[i - 1]`` is the external id of the model's internal item ``i``.
    ``domain`` is None for a file that does not record it.
    """

    path: Path
    model: SequenceRecommender
    centroids: np.ndarray
    item_ids: tuple[str, ...]
    domain: str | None


@dataclass(frozen=True)
class Catalogue:
    """The items a domain can recommend, in catalogue order from index 1.

    First come the model's items that are still in the item file, in the model's
    order, then the items of the item file that the model was not trained on
    ("new" items), in file order. Index 0 is padding.

    ``codes`` is the LongTensor [N' + 1, D] of product-quantization codes: saved
    codes for the model's items, codes from the saved codebook for new items.
    ``model_index`` is the LongTensor [N' + 1] of each item's internal index in the
    model, 0 for new items and padding, because new items have no learned item-ID
    embedding in the user prompt.
    """

    item_ids: tuple[str, ...]
    item_texts: tuple[str, ...]
    codes: Tensor
    model_index: Tensor
    n_new: int
    index: dict[str, int]

    @property
    def n_items(self) -> int:
        """Number N' of recommendable items."""
        return len(self.item_ids)


def read_saved_model(path: Path, fallback_item_ids: Sequence[str]) -> SavedModel:
    """Load a saved model and check that its parts fit together.

    Parameters
    ----------
    path
        The ``model.safetensors`` file.
    fallback_item_ids
        The model's item ids when the file does not record them (files written
        before item ids were saved): the domain's items after 5-core filtering.

    Raises
    ------
    ModelFileError
        If the file is missing or unreadable, lacks the codebook or the config
        metadata, or its codebook, item codes and item ids disagree in shape.
    """
    path = Path(path)
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "not found"
        raise ModelFileError(
            f"model file {path} {problem}; train the domain first with `fedcdr-client "
            "run`, which writes work_dir/model.safetensors, or pass --model"
        )
    try:
        model, metadata = load_saved_model(path)
        with safe_open(str(path), framework="pt") as handle:
            centroids = (
                handle.get_tensor(CENTROIDS_KEY).numpy()
                if CENTROIDS_KEY in handle.keys()
                else None
            )
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as error:
        raise ModelFileError(
            f"model file {path} cannot be read as a fedcdr model ({error}); "
            f"{_RETRAIN_HINT}"
        ) from None
    if centroids is None:
        raise ModelFileError(
            f"model file {path} has no {CENTROIDS_KEY!r} tensor, so new items cannot "
            f"be coded; {_RETRAIN_HINT}"
        )
    _check_centroids(path, model, centroids)
    item_ids = _item_ids(path, metadata, model.n_items, fallback_item_ids)
    return SavedModel(path, model, centroids, item_ids, metadata.get("domain"))


def build_catalogue(
    saved: SavedModel,
    item_texts: dict[str, str],
    cache_dir: Path,
    encoder_factory: Callable[[], Encoder] = TextEncoder,
) -> Catalogue:
    """Build the catalogue of the item file, coding new items with the saved codebook.

    Texts are embedded through the cache in ``cache_dir`` (see ``embed_items``),
    so only texts never seen before run through the encoder. Items whose text is
    empty cannot be coded and are left out with a warning.

    Raises
    ------
    ModelFileError
        If the encoder's dimension differs from the model's ``text_dim``, or the
        saved item codes disagree with the codes the saved codebook gives the item
        texts (the model was trained with another codebook or other texts).
    """
    dimension = getattr(encoder_factory, "DIMENSION", None)
    text_dim = saved.model.config.text_dim
    if isinstance(dimension, int) and dimension != text_dim:
        raise ModelFileError(
            f"model file {saved.path} expects {text_dim}-dimensional item "
            f"embeddings (model.text_dim), but the text encoder gives {dimension}; "
            f"the model was built for another encoder, so {_RETRAIN_HINT}"
        )

    model_index = {item: i + 1 for i, item in enumerate(saved.item_ids)}
    empty = [item for item, text in item_texts.items() if not text]
    if empty:
        logger.warning(
            "%d items have no text and cannot be recommended, for example %s",
            len(empty),
            empty[:5],
        )
    known = [item for item in saved.item_ids if item_texts.get(item)]
    new = [
        item for item, text in item_texts.items() if text and item not in model_index
    ]
    removed = len(saved.item_ids) - len(known)
    if removed:
        logger.warning(
            "%d items of the model are no longer in the item file and are not "
            "recommended",
            removed,
        )

    # Encode a sample of the model's items (to check the codebook) and every new item.
    step = max(1, len(known) // CODE_CHECK_SAMPLE)
    sample = known[::step][:CODE_CHECK_SAMPLE]
    texts = [item_texts[item] for item in [*sample, *new]]
    embeddings = embed_items(texts, cache_dir, encoder_factory)
    if embeddings.shape[1] != text_dim:
        raise ModelFileError(
            f"model file {saved.path} expects {text_dim}-dimensional item "
            f"embeddings, but the text encoder gave {embeddings.shape[1]}; "
            f"{_RETRAIN_HINT}"
        )
    computed = assign_codes(embeddings, saved.centroids)
    saved_codes = saved.model.item_codes
    _check_code_agreement(
        saved, computed[: len(sample)], saved_codes[[model_index[i] for i in sample]]
    )

    n_subspaces = saved_codes.shape[1]
    codes = torch.zeros((len(known) + len(new) + 1, n_subspaces), dtype=torch.long)
    codes[1 : len(known) + 1] = saved_codes[[model_index[i] for i in known]]
    codes[len(known) + 1 :] = torch.from_numpy(computed[len(sample) :])
    indices = [0, *(model_index[i] for i in known), *([0] * len(new))]
    item_ids = (*known, *new)
    if new:
        logger.info("coded %d new items with the saved codebook", len(new))
    return Catalogue(
        item_ids=item_ids,
        item_texts=tuple(item_texts[item] for item in item_ids),
        codes=codes,
        model_index=torch.tensor(indices, dtype=torch.long),
        n_new=len(new),
        index={item: i + 1 for i, item in enumerate(item_ids)},
    )


def _check_centroids(
    path: Path, model: SequenceRecommender, centroids: np.ndarray
) -> None:
    config = model.config
    expected = (
        config.n_subspaces,
        config.n_centroids,
        config.text_dim // config.n_subspaces,
    )
    if centroids.shape != expected:
        raise ModelFileError(
            f"model file {path} has a codebook of shape {list(centroids.shape)}, "
            f"but its model config needs [n_subspaces, n_centroids, text_dim / "
            f"n_subspaces] = {list(expected)}; {_RETRAIN_HINT}"
        )
    if not np.isfinite(centroids).all():
        raise ModelFileError(
            f"model file {path} has NaN or infinite codebook values; {_RETRAIN_HINT}"
        )


def _item_ids(
    path: Path,
    metadata: dict[str, str],
    n_items: int,
    fallback: Sequence[str],
) -> tuple[str, ...]:
    """Return the model's item ids from the metadata, or ``fallback`` when absent."""
    if ITEM_IDS_KEY in metadata:
        try:
            item_ids = json.loads(metadata[ITEM_IDS_KEY])
        except json.JSONDecodeError as error:
            raise ModelFileError(
                f"model file {path} has invalid {ITEM_IDS_KEY!r} metadata ({error}); "
                f"{_RETRAIN_HINT}"
            ) from None
        source = f"its {ITEM_IDS_KEY!r} metadata"
    else:
        # NOTE: files saved before item ids were recorded need the interaction
        # file unchanged since training, so that 5-core filtering gives the same
        # items. Only the item count is checked.
        item_ids = list(fallback)
        source = "the data folder after 5-core filtering (the file records no ids)"
    if not isinstance(item_ids, list) or len(item_ids) != n_items:
        count = len(item_ids) if isinstance(item_ids, list) else "no"
        raise ModelFileError(
            f"model file {path} has {n_items} items, but {source} lists {count} item "
            f"ids; the model was trained on other data, so {_RETRAIN_HINT}"
        )
    return tuple(str(item) for item in item_ids)


def _check_code_agreement(
    saved: SavedModel, computed: np.ndarray, saved_codes: Tensor
) -> None:
    if computed.shape[0] == 0:
        return
    agreement = float((torch.from_numpy(computed) == saved_codes).double().mean())
    logger.debug("item code agreement=%.4f over %d items", agreement, len(computed))
    if agreement < MIN_CODE_AGREEMENT:
        raise ModelFileError(
            f"model file {saved.path} does not match its codebook: only "
            f"{agreement:.0%} of the saved item codes equal the codes that its "
            f"{CENTROIDS_KEY!r} give the item texts (at least "
            f"{MIN_CODE_AGREEMENT:.0%} expected), so the model was trained with "
            f"another codebook or other item texts; {_RETRAIN_HINT}"
        )
