"""Load one domain's interactions and item texts from RecBole atomic or CSV files."""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# Re-exported, so that callers find the whole data API in this module.
from client.split import Split, split_leave_one_out
from client.tables import DataError, TableHeader, read_table

__all__ = [
    "DataError",
    "DomainData",
    "Split",
    "TableHeader",
    "describe_domain",
    "find_domain_files",
    "load_domain",
    "read_item_texts",
    "read_table",
    "split_leave_one_out",
]

logger = logging.getLogger(__name__)

INTER_SUFFIXES = {"atomic": ".inter", "csv": ".inter.csv"}
ITEM_SUFFIXES = {"atomic": ".item", "csv": ".item.csv"}
INTER_COLUMNS = ("user_id", "item_id", "timestamp")
TEXT_SEPARATOR = ". "

_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class DomainData:
    """Chronological item sequences and item texts of one domain.

    Internal item index 0 is padding, so internal item ``i`` (1-based) has external
    id ``item_ids[i - 1]`` and text ``item_texts[i - 1]``. User ``u`` has external
    id ``user_ids[u]`` and sequence ``sequences[u]``.
    """

    name: str
    item_ids: tuple[str, ...]
    item_texts: tuple[str, ...]
    user_ids: tuple[str, ...]
    sequences: tuple[tuple[int, ...], ...]
    n_interactions: int

    @property
    def n_items(self) -> int:
        """Number of real items N, so internal indices run from 1 to N."""
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        """Number of users, one sequence each."""
        return len(self.user_ids)


def find_domain_files(folder: Path) -> tuple[Path, Path]:
    """Find the interaction file and the item file of the single domain in a folder.

    The folder must contain either ``<name>.inter`` and ``<name>.item`` (RecBole
    atomic files) or ``<name>.inter.csv`` and ``<name>.item.csv``, for exactly one
    ``<name>``. Other files are ignored.

    Returns
    -------
    (inter_file, item_file) : tuple of Path

    Raises
    ------
    DataError
        If the folder is missing, contains no domain files, contains both formats
        or several domains, or lacks one of the two files.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(
            folder, "is a file, not a folder; pass the folder of one domain"
        )
    if not folder.is_dir():
        raise DataError(folder, "folder not found; pass the folder of one domain")

    found: dict[tuple[str, str], set[str]] = {}
    for entry in sorted(folder.iterdir()):
        if not entry.is_file():
            continue
        for fmt in ("csv", "atomic"):
            kind = _file_kind(entry.name, fmt)
            if kind is not None:
                found.setdefault((fmt, entry.name[: -len(kind[1])]), set()).add(kind[0])
                break
    if not found:
        raise DataError(
            folder,
            "no domain files found; add <name>.inter and <name>.item (RecBole atomic "
            "files) or <name>.inter.csv and <name>.item.csv",
        )
    if len(found) > 1:
        listed = ", ".join(f"{name!r} ({fmt})" for fmt, name in sorted(found))
        problem = (
            "files in both formats found"
            if len({fmt for fmt, _ in found}) > 1
            else "several domains found"
        )
        raise DataError(
            folder,
            f"{problem}: {listed}; keep the files of exactly one domain in one "
            "format in this folder",
        )

    ((fmt, name), kinds) = next(iter(found.items()))
    inter_file = folder / (name + INTER_SUFFIXES[fmt])
    item_file = folder / (name + ITEM_SUFFIXES[fmt])
    for path, file_kind in ((inter_file, "inter"), (item_file, "item")):
        if file_kind not in kinds:
            raise DataError(path, "file not found; add it next to the other file")
    return inter_file, item_file


def load_domain(folder: Path, max_seq_len: int = 50, min_core: int = 5) -> DomainData:
    """Load, filter and index one domain from a folder; write nothing.

    The steps run in this order. Parse both files and check that every
    interaction's item has a row with text. Sort each user's interactions by
    (timestamp, item id). Filter users and items iteratively until each has at least
    ``min_core`` interactions. Index the surviving items and users in sorted id
    order, and keep the last ``max_seq_len`` items of each sequence. Duplicate
    (user, item) interactions are kept as separate events.

    Ids sort as integers when every id of that kind (item ids in the item file,
    user ids in the interaction file) is an integer, and as strings otherwise. The
    same item order breaks ties between equal timestamps, so the result does not
    depend on the row order in the files. An item's text is the non-empty values
    of its text columns (every item-file column except ``item_id``) in column order,
    joined with ``". "``, for example ``"Toy Story. 1995. Animation, Comedy"``.

    Parameters
    ----------
    folder : Path
        Folder holding one domain, see ``find_domain_files``.
    max_seq_len : int
        Maximum sequence length kept per user, at least 3.
    min_core : int
        Minimum number of interactions of every kept user and item, at least 3
        because the leave-one-out split needs two targets and a history item.

    Raises
    ------
    DataError
        For invalid files or rows, or when no interaction survives filtering.
    ValueError
        If ``max_seq_len`` or ``min_core`` is below 3.
    TypeError
        If ``max_seq_len`` or ``min_core`` is not an int.
    """
    for param, value in (("max_seq_len", max_seq_len), ("min_core", min_core)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{param} must be an int, got {type(value).__name__}")
        if value < 3:
            raise ValueError(
                f"{param} must be at least 3 for a leave-one-out split, got {value}"
            )

    inter_file, item_file = find_domain_files(Path(folder))
    texts, text_lines = _read_items(item_file)
    users, items, times, lines = _read_interactions(inter_file)
    _check_item_references(inter_file, item_file, items, lines, texts, text_lines)

    item_key = _sort_key(texts.keys())
    histories = _order_histories(users, items, times, item_key)
    n_users_before, n_items_before = len(histories), len(set(items))
    if not histories:
        raise DataError(inter_file, "contains no interactions; add interaction rows")
    histories = _filter_core(histories, min_core)
    if not histories:
        raise DataError(
            inter_file,
            f"no interactions remain after {min_core}-core filtering (before it: "
            f"{n_users_before} users, {n_items_before} items); every user and item "
            f"needs at least {min_core} interactions, so add interactions",
        )

    data = _index_domain(
        _domain_name(inter_file),
        histories,
        texts,
        item_key,
        _sort_key(set(users)),
        max_seq_len,
    )
    logger.info(
        "loaded domain=%s users=%d items=%d interactions=%d (before %d-core: "
        "users=%d items=%d interactions=%d)",
        data.name,
        data.n_users,
        data.n_items,
        data.n_interactions,
        min_core,
        n_users_before,
        n_items_before,
        len(items),
    )
    return data


def read_item_texts(folder: Path) -> dict[str, str]:
    """Read every item of a domain's item file, with no filtering, in file order.

    Unlike ``load_domain`` this keeps items without interactions, such as items
    added to the catalogue after training. Texts are built as in ``load_domain``
    and may be empty when all text cells of a row are empty.

    Raises
    ------
    DataError
        For a missing or invalid item file, see ``find_domain_files``.
    """
    _, item_file = find_domain_files(Path(folder))
    texts, _ = _read_items(item_file)
    return texts


def describe_domain(data: DomainData) -> str:
    """Format a short multi-line summary of a loaded domain for people to read."""
    lengths = [len(seq) for seq in data.sequences]
    mean_length = sum(lengths) / len(lengths) if lengths else 0.0
    per_user = data.n_interactions / data.n_users if data.n_users else 0.0
    density = data.n_interactions / (data.n_users * data.n_items) if lengths else 0.0
    return "\n".join(
        [
            f"domain: {data.name}",
            f"users: {data.n_users}",
            f"items: {data.n_items}",
            f"interactions: {data.n_interactions} "
            f"({per_user:.1f} per user, density {density:.4f})",
            f"sequence length after truncation: mean {mean_length:.1f}, "
            f"min {min(lengths, default=0)}, max {max(lengths, default=0)}",
        ]
    )


def _domain_name(inter_file: Path) -> str:
    fmt = "csv" if inter_file.name.endswith(".csv") else "atomic"
    return inter_file.name[: -len(INTER_SUFFIXES[fmt])]


def _file_kind(filename: str, fmt: str) -> tuple[str, str] | None:
    for kind, suffixes in (("inter", INTER_SUFFIXES), ("item", ITEM_SUFFIXES)):
        suffix = suffixes[fmt]
        if filename.endswith(suffix) and len(filename) > len(suffix):
            return kind, suffix
    return None


def _read_items(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    header, rows = read_table(path)
    id_col = header.index("item_id")
    text_cols = [i for i in range(len(header.columns)) if i != id_col]
    if not text_cols:
        raise DataError(
            path,
            "the item file has no text column; add at least one column besides "
            "item_id, such as a title",
            header.line,
        )

    texts: dict[str, str] = {}
    lines: dict[str, int] = {}
    for line, cells in rows:
        item = cells[id_col]
        if not item:
            raise DataError(path, "item id is empty; fill it in", line, "item_id")
        if item in texts:
            raise DataError(
                path,
                f"item id {item!r} is already defined on line {lines[item]}; remove "
                "the duplicate row",
                line,
                "item_id",
            )
        texts[item] = TEXT_SEPARATOR.join(cells[i] for i in text_cols if cells[i])
        lines[item] = line
    return texts, lines


def _read_interactions(
    path: Path,
) -> tuple[list[str], list[str], list[float], list[int]]:
    header, rows = read_table(path)
    user_col, item_col, time_col = (header.index(name) for name in INTER_COLUMNS)

    users: list[str] = []
    items: list[str] = []
    times: list[float] = []
    lines: list[int] = []
    for line, cells in rows:
        for col, name in ((user_col, "user_id"), (item_col, "item_id")):
            if not cells[col]:
                raise DataError(
                    path, f"{name} is empty; fill it in or delete the row", line, name
                )
        text = cells[time_col]
        try:
            time = float(text)
        except ValueError:
            time = math.nan
        if not math.isfinite(time):
            raise DataError(
                path,
                f"value {text!r} is not a finite number; write the timestamp as a "
                "number such as Unix seconds",
                line,
                "timestamp",
            )
        users.append(cells[user_col])
        items.append(cells[item_col])
        times.append(time)
        lines.append(line)
    return users, items, times, lines


def _check_item_references(
    inter_file: Path,
    item_file: Path,
    items: list[str],
    lines: list[int],
    texts: dict[str, str],
    text_lines: dict[str, int],
) -> None:
    for item, line in zip(items, lines, strict=True):
        text = texts.get(item)
        if text is None:
            raise DataError(
                inter_file,
                f"item {item!r} has no row in {item_file.name}; add its row with "
                "text or delete the interaction",
                line,
                "item_id",
            )
        if not text:
            raise DataError(
                item_file,
                f"item {item!r} has no text because all its text cells are empty; "
                "fill in at least one, such as the title",
                text_lines[item],
            )


def _order_histories(
    users: list[str],
    items: list[str],
    times: list[float],
    item_key: Callable[[str], tuple[int, str]],
) -> dict[str, list[str]]:
    """Group items by user in (timestamp, item id) order, free of file row order."""
    per_user: dict[str, list[tuple[float, tuple[int, str]]]] = {}
    for user, item, time in zip(users, items, times, strict=True):
        per_user.setdefault(user, []).append((time, item_key(item)))
    return {
        user: [key[1] for _, key in sorted(events)] for user, events in per_user.items()
    }


def _index_domain(
    name: str,
    histories: dict[str, list[str]],
    texts: dict[str, str],
    item_key: Callable[[str], tuple[int, str]],
    user_key: Callable[[str], tuple[int, str]],
    max_seq_len: int,
) -> DomainData:
    """Number the surviving items from 1 in id order and truncate the sequences."""
    item_ids = sorted(
        {item for seq in histories.values() for item in seq}, key=item_key
    )
    index = {item: i + 1 for i, item in enumerate(item_ids)}
    user_ids = sorted(histories, key=user_key)
    return DomainData(
        name=name,
        item_ids=tuple(item_ids),
        item_texts=tuple(texts[item] for item in item_ids),
        user_ids=tuple(user_ids),
        sequences=tuple(
            tuple(index[item] for item in histories[user][-max_seq_len:])
            for user in user_ids
        ),
        n_interactions=sum(len(seq) for seq in histories.values()),
    )


def _sort_key(ids: Iterable[str]) -> Callable[[str], tuple[int, str]]:
    """Return a sort key for ids: numeric when every id is an integer, else text."""
    if all(_INTEGER.fullmatch(i) for i in ids):
        return lambda i: (int(i), i)
    return lambda i: (0, i)


def _filter_core(
    histories: dict[str, list[str]], min_core: int
) -> dict[str, list[str]]:
    """Drop users and items with fewer than ``min_core`` interactions until stable."""
    while True:
        counts = Counter(item for seq in histories.values() for item in seq)
        rare = {item for item, count in counts.items() if count < min_core}
        short = any(len(seq) < min_core for seq in histories.values())
        if not rare and not short:
            return histories
        if rare:
            histories = {
                user: [item for item in seq if item not in rare]
                for user, seq in histories.items()
            }
        histories = {u: seq for u, seq in histories.items() if len(seq) >= min_core}
