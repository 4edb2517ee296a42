"""Reader for RecBole atomic and CSV table files, and the DataError it raises."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


class DataError(ValueError):
    """Invalid input data, located by file, line and column.

    Attributes
    ----------
    path : Path
        File (or folder) that contains the problem.
    line : int or None
        1-based line number in the file, where the header is line 1.
    column : str or None
        Column name, where the problem belongs to one column.
    message : str
        What is wrong and what to do, without the location prefix.
    """

    def __init__(
        self,
        path: Path,
        message: str,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.message = message
        self.line = line
        self.column = column
        location = str(self.path) if line is None else f"{self.path}:{line}"
        where = "" if column is None else f"column {column!r}: "
        super().__init__(f"{location}: {where}{message}")

    def __reduce__(self) -> tuple[type[DataError], tuple[object, ...]]:
        return (type(self), (self.path, self.message, self.line, self.column))


@dataclass(frozen=True)
class TableHeader:
    """Column names of one atomic or CSV file, with any ``:type`` suffix removed."""

    path: Path
    line: int
    columns: tuple[str, ...]

    def index(self, name: str) -> int:
        """Return the position of column ``name``, or raise DataError if it is missing."""
        if name not in self.columns:
            found = ", ".join(self.columns)
            raise DataError(
                self.path,
                f"required column is missing (columns found: {found}); "
                f"add a {name!r} column to the header",
                self.line,
                name,
            )
        return self.columns.index(name)


def read_table(path: Path) -> tuple[TableHeader, Iterator[tuple[int, list[str]]]]:
    """Read the header of a table file and return it with an iterator over its rows.

    A name ending in ``.csv`` is read as comma-separated with the csv module (quoted
    cells allowed), whose header cells may carry a RecBole ``:type`` suffix. Any other
    name is read as a RecBole atomic file: tab-separated, no quoting, and every
    header cell ``name:type`` with a type from ATOMIC_TYPES. The file must be UTF-8,
    and a byte-order mark is ignored. Blank lines are skipped and every cell is
    stripped of surrounding whitespace.

    Returns
    -------
    header : TableHeader
    rows : iterator of (line, cells)
        1-based file line where the row starts, and its cells, as many as the header
        has columns. The iterator raises DataError for a row of another width.

    Raises
    ------
    DataError
        If the file is not UTF-8, has no header, or a header cell is invalid.
    """
    is_csv = path.name.endswith(".csv")
    records = _iter_csv(path) if is_csv else _iter_atomic(path)
    first = next(records, None)
    if first is None:
        raise DataError(path, "file is empty; write a header line first", 1)
    header = _parse_header(path, first[0], first[1], typed=not is_csv)
    return header, _check_width(header, records)


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, decoded line with its line break) from a UTF-8 file."""
    try:
        handle = path.open("rb")
    except OSError as error:
        raise DataError(path, f"cannot open file ({error.strerror})") from error
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    path,
                    f"invalid UTF-8 at byte {error.start} of the line; save the "
                    "file as UTF-8",
                    number,
                ) from error
            if number == 1:
                text = text.removeprefix("\ufeff")
            yield number, text


def _iter_atomic(path: Path) -> Iterator[tuple[int, list[str]]]:
    for number, text in _iter_lines(path):
        text = text.removesuffix("\n").removesuffix("\r")
        if text:
            yield number, [cell.strip() for cell in text.split("\t")]


def _iter_csv(path: Path) -> Iterator[tuple[int, list[str]]]:
    lines = _iter_lines(path)
    reader = csv.reader(text for _, text in lines)
    start = 1
    try:
        for cells in reader:
            if cells:
                yield start, [cell.strip() for cell in cells]
            start = reader.line_num + 1
    except csv.Error as error:
        raise DataError(
            path, f"invalid CSV ({error}); check the quoting", start
        ) from error


def _parse_header(path: Path, line: int, cells: list[str], typed: bool) -> TableHeader:
    names: list[str] = []
    for cell in cells:
        name, _, ftype = cell.rpartition(":")
        if typed and (not name or ftype not in ATOMIC_TYPES):
            raise DataError(
                path,
                f"header cell {cell!r} is not 'name:type' with a type from "
                f"{', '.join(ATOMIC_TYPES)}; fix the header",
                line,
            )
        if not typed and (not name or ftype not in ATOMIC_TYPES):
            name = cell
        if not name or name in names:
            problem = "is empty" if not name else "appears twice"
            raise DataError(path, f"column name {problem}; fix the header", line, name)
        names.append(name)
    return TableHeader(path, line, tuple(names))


def _check_width(
    header: TableHeader, records: Iterator[tuple[int, list[str]]]
) -> Iterator[tuple[int, list[str]]]:
    width = len(header.columns)
    for line, cells in records:
        if len(cells) != width:
            raise DataError(
                header.path,
                f"row has {len(cells)} cells but the header has {width} columns; "
                "make every row match the header",
                line,
            )
        yield line, cells
