"""Write every user's top-k recommendations to CSV or Parquet, batch by batch."""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from client.recommend import UserBatch

logger = logging.getLogger(__name__)

COLUMNS = ("user_id", "rank", "item_id", "score")
FORMATS = {".csv": "csv", ".parquet": "parquet"}


class _BatchWriter(Protocol):
    def write(self, batch: UserBatch) -> None: ...

    def close(self) -> None: ...


class _CsvWriter:
    def __init__(self, path: Path) -> None:
        self._handle = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle)
        self._writer.writerow(COLUMNS)

    def write(self, batch: UserBatch) -> None:
        for user, items, scores in zip(
            batch.user_ids, batch.item_ids, batch.scores, strict=True
        ):
            for rank, (item, score) in enumerate(zip(items, scores, strict=True), 1):
                self._writer.writerow((user, rank, item, repr(score)))

    def close(self) -> None:
        self._handle.close()


class _ParquetWriter:
    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self._schema = pa.schema(
            [
                ("user_id", pa.string()),
                ("rank", pa.int32()),
                ("item_id", pa.string()),
                ("score", pa.float64()),
            ]
        )
        self._writer = pq.ParquetWriter(str(path), self._schema)

    def write(self, batch: UserBatch) -> None:
        users: list[str] = []
        ranks: list[int] = []
        for user, items in zip(batch.user_ids, batch.item_ids, strict=True):
            users.extend([user] * len(items))
            ranks.extend(range(1, len(items) + 1))
        columns = [
            users,
            ranks,
            [item for items in batch.item_ids for item in items],
            [score for scores in batch.scores for score in scores],
        ]
        # One row group per batch, so memory stays bounded by the batch size.
        table = self._pa.Table.from_arrays(
            [self._pa.array(c, type=f.type) for c, f in zip(columns, self._schema)],
            schema=self._schema,
        )
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()


def export_format(path: Path) -> str:
    """Return "csv" or "parquet" from the file name's suffix.

    Raises
    ------
    ValueError
        For any other suffix.
    """
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(
            f"--out {path} must end in .csv or .parquet, which selects the format"
        )
    return fmt


def write_recommendations(
    batches: Iterable[UserBatch],
    path: Path,
    n_users: int,
    progress: bool | None = None,
) -> int:
    """Write batches of top-k lists to ``path``, one row per (user, rank).

    Columns are ``user_id``, ``rank`` (from 1), ``item_id`` and ``score``. The file
    is written to ``<path>.partial`` and renamed when complete, so a stopped export
    leaves no truncated file under ``path``.

    Parameters
    ----------
    batches
        The output of ``Recommender.all_users``.
    path
        Output file; its suffix (.csv or .parquet) selects the format.
    n_users
        Total number of users, for the progress bar.
    progress
        Show a progress bar on stderr; None shows it only when stderr is a
        terminal.

    Returns
    -------
    int
        Number of rows written.
    """
    fmt = export_format(path)
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    writer: _BatchWriter = (
        _CsvWriter(partial) if fmt == "csv" else _ParquetWriter(partial)
    )
    show = sys.stderr.isatty() if progress is None else progress
    rows = 0
    try:
        with tqdm(total=n_users, unit="user", disable=not show) as bar:
            for batch in batches:
                writer.write(batch)
                rows += sum(len(items) for items in batch.item_ids)
                bar.update(len(batch.user_ids))
                logger.debug("exported users=%d rows=%d", bar.n, rows)
        writer.close()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    logger.info("wrote %d rows for %d users to %s (%s)", rows, n_users, path, fmt)
    return rows
