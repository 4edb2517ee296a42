"""Tests for loading, filtering and splitting one domain's files."""

from __future__ import annotations

import csv
import pickle
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from client.data import (
    DataError,
    DomainData,
    describe_domain,
    find_domain_files,
    load_domain,
    split_leave_one_out,
)

INTER_HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
ITEM_HEADER = ["item_id:token", "title:token_seq", "year:token", "genres:token_seq"]

Rows = list[list[str]]


def base_rows() -> tuple[Rows, Rows]:
    """Return a valid domain: 6 users who each rated all 6 items, header first."""
    inter = [list(INTER_HEADER)]
    for user in range(1, 7):
        for item in range(1, 7):
            # User u rates items in the order u, u+1, ... (wrapping), 10 s apart.
            position = (item - user) % 6
            inter.append([str(user), str(item), "4", str(1000 * user + 10 * position)])
    items = [list(ITEM_HEADER)]
    for item in range(1, 7):
        items.append([str(item), f"Movie {item}", "1995", "Drama Comedy"])
    return inter, items


def write_atomic(folder: Path, inter: Rows, items: Rows, name: str = "films") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, rows in ((".inter", inter), (".item", items)):
        text = "".join("\t".join(row) + "\n" for row in rows)
        (folder / f"{name}{suffix}").write_text(text, encoding="utf-8")
    return folder


def write_csv(folder: Path, inter: Rows, items: Rows, name: str = "films") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, rows in ((".inter.csv", inter), (".item.csv", items)):
        with (folder / f"{name}{suffix}").open("w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows(rows)
    return folder


def test_load_domain_atomic_fields(tmp_path: Path) -> None:
    inter, items = base_rows()
    data = load_domain(write_atomic(tmp_path, inter, items))

    assert data.name == "films"
    assert data.n_users == 6
    assert data.n_items == 6
    assert data.n_interactions == 36
    assert data.item_ids == ("1", "2", "3", "4", "5", "6")
    assert data.user_ids == ("1", "2", "3", "4", "5", "6")
    assert data.item_texts[0] == "Movie 1. 1995. Drama Comedy"
    assert data.sequences[0] == (1, 2, 3, 4, 5, 6)
    assert data.sequences[2] == (3, 4, 5, 6, 1, 2)


def test_load_domain_csv_matches_atomic(tmp_path: Path) -> None:
    inter, items = base_rows()
    # CSV headers may drop the :type suffix, and quoted cells may contain commas.
    inter[0] = ["user_id", "item_id", "rating", "timestamp"]
    items[0] = ["item_id", "title:token_seq", "year", "genres"]
    items[1][1] = "Crying Game, The"
    csv_data = load_domain(write_csv(tmp_path / "csv", inter, items))
    items[0] = list(ITEM_HEADER)
    inter[0] = list(INTER_HEADER)
    atomic_data = load_domain(write_atomic(tmp_path / "atomic", inter, items))

    assert csv_data == atomic_data
    assert csv_data.item_texts[0] == "Crying Game, The. 1995. Drama Comedy"


def test_load_domain_bom_and_crlf(tmp_path: Path) -> None:
    inter, items = base_rows()
    folder = write_atomic(tmp_path / "plain", inter, items)
    other = tmp_path / "bom"
    other.mkdir()
    for path in folder.iterdir():
        text = path.read_text(encoding="utf-8").replace("\n", "\r\n")
        (other / path.name).write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))

    assert load_domain(other) == load_domain(folder)


def test_load_domain_text_skips_empty_fields(tmp_path: Path) -> None:
    inter, items = base_rows()
    items[2][2] = ""
    items[3][1] = "  "
    data = load_domain(write_atomic(tmp_path, inter, items))

    assert data.item_texts[1] == "Movie 2. Drama Comedy"
    assert data.item_texts[2] == "1995. Drama Comedy"


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (["10", "9", "2", "100", "1", "30"], ("1", "2", "9", "10", "30", "100")),
        (["b10", "b9", "a2", "c", "a10", "b1"], ("a10", "a2", "b1", "b10", "b9", "c")),
    ],
)
def test_load_domain_item_order(
    tmp_path: Path, ids: list[str], expected: tuple
) -> None:
    inter, items = base_rows()
    rename = {str(i + 1): new for i, new in enumerate(ids)}
    for row in inter[1:]:
        row[1] = rename[row[1]]
    for row in items[1:]:
        row[0] = rename[row[0]]
    data = load_domain(write_atomic(tmp_path, inter, items))

    assert data.item_ids == expected
    assert data.item_texts[data.item_ids.index(ids[0])] == "Movie 1. 1995. Drama Comedy"


def test_load_domain_user_order_numeric(tmp_path: Path) -> None:
    inter, items = base_rows()
    for row in inter[1:]:
        row[0] = {"1": "10", "2": "9", "3": "200"}.get(row[0], row[0])
    data = load_domain(write_atomic(tmp_path, inter, items))

    assert data.user_ids == ("4", "5", "6", "9", "10", "200")


def test_load_domain_timestamp_tie_uses_item_id(tmp_path: Path) -> None:
    inter, items = base_rows()
    for row in inter[1:]:
        if row[0] == "3":
            row[3] = "5.0"
    data = load_domain(write_atomic(tmp_path, inter, items))

    assert data.sequences[2] == (1, 2, 3, 4, 5, 6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_load_domain_row_shuffle_invariant(tmp_path: Path, seed: int) -> None:
    inter, items = base_rows()
    # Many timestamp ties, so the order comes from the tie-break on the item id.
    for row in inter[1:]:
        row[3] = str(int(row[3]) // 30)
    reference = load_domain(write_atomic(tmp_path / "sorted", inter, items))
    rng = random.Random(seed)
    body, item_body = inter[1:], items[1:]
    rng.shuffle(body)
    rng.shuffle(item_body)
    folder = write_atomic(
        tmp_path / "shuffled", [inter[0], *body], [items[0], *item_body]
    )

    assert load_domain(folder) == reference


def test_load_domain_core_filter_cascades(tmp_path: Path) -> None:
    inter, items = base_rows()
    # Item 7 starts with 5 ratings and user 9 with 5. User 8 has 4, so dropping
    # user 8 leaves item 7 with 4, and dropping item 7 leaves user 9 with 4.
    inter += [[user, "7", "3", "9000"] for user in ("1", "2", "3", "8", "9")]
    inter += [["8", item, "3", "9100"] for item in ("1", "2", "3")]
    inter += [["9", item, "3", "9100"] for item in ("1", "2", "3", "4")]
    items.append(["7", "Movie 7", "2001", "Horror"])
    data = load_domain(write_atomic(tmp_path, inter, items))
    full = load_domain(tmp_path, max_seq_len=10**6)
    user_counts = [len(seq) for seq in full.sequences]
    item_counts = Counter(item for seq in full.sequences for item in seq)

    assert data.user_ids == ("1", "2", "3", "4", "5", "6")
    assert data.item_ids == ("1", "2", "3", "4", "5", "6")
    assert data.n_interactions == 36
    assert min(user_counts) >= 5
    assert min(item_counts.values()) >= 5


def test_load_domain_min_core_lower(tmp_path: Path) -> None:
    inter, items = base_rows()
    inter += [["7", str(i), "3", str(9000 + i)] for i in (1, 2, 3)]
    data = load_domain(write_atomic(tmp_path, inter, items), min_core=3)

    assert data.user_ids[-1] == "7"
    assert data.sequences[-1] == (1, 2, 3)


def test_load_domain_truncates_to_max_seq_len(tmp_path: Path) -> None:
    inter, items = base_rows()
    data = load_domain(write_atomic(tmp_path, inter, items), max_seq_len=4)

    assert data.sequences[0] == (3, 4, 5, 6)
    assert all(len(seq) == 4 for seq in data.sequences)
    assert data.n_interactions == 36


def test_load_domain_keeps_duplicate_events(tmp_path: Path) -> None:
    inter, items = base_rows()
    inter.append(["1", "1", "5", "9999"])
    data = load_domain(write_atomic(tmp_path, inter, items))

    assert data.sequences[0] == (1, 2, 3, 4, 5, 6, 1)
    assert data.n_interactions == 37


def _snapshot(root: Path) -> dict[Path, tuple[int, bytes]]:
    return {
        path: (path.stat().st_mtime_ns, path.read_bytes() if path.is_file() else b"")
        for path in root.rglob("*")
    }


def test_load_domain_writes_nothing(tmp_path: Path) -> None:
    inter, items = base_rows()
    folder = write_atomic(tmp_path / "d", inter, items)
    before = _snapshot(tmp_path)
    load_domain(folder)

    assert _snapshot(tmp_path) == before


def test_load_domain_empty_after_filter(tmp_path: Path) -> None:
    inter, items = base_rows()
    inter = [inter[0]] + [row for row in inter[1:] if row[1] != "6"]
    with pytest.raises(DataError, match="after 6-core filtering") as caught:
        load_domain(write_atomic(tmp_path, inter, items), min_core=6)

    assert "6 users, 5 items" in str(caught.value)
    assert caught.value.line is None
    assert caught.value.path == tmp_path / "films.inter"


@pytest.mark.parametrize(
    ("param", "value", "error"),
    [
        ("min_core", 2, ValueError),
        ("max_seq_len", 2, ValueError),
        ("min_core", 5.0, TypeError),
        ("max_seq_len", True, TypeError),
    ],
)
def test_load_domain_bad_parameter(
    tmp_path: Path, param: str, value: object, error: type
) -> None:
    inter, items = base_rows()
    folder = write_atomic(tmp_path, inter, items)
    with pytest.raises(error, match=param):
        load_domain(folder, **{param: value})  # type: ignore[arg-type]


# Each case edits the valid rows and names the file, line, column and message
# expected in the DataError. Line 1 is the header, so row k of the body is line k+1.
Edit = Callable[[Rows, Rows], None]


def _set(rows_index: int, row: int, col: int, value: str) -> Edit:
    def edit(inter: Rows, items: Rows) -> None:
        (inter, items)[rows_index][row][col] = value

    return edit


def _drop_column(rows_index: int, col: int) -> Edit:
    def edit(inter: Rows, items: Rows) -> None:
        for row in (inter, items)[rows_index]:
            del row[col]

    return edit


def _append(rows_index: int, row: list[str]) -> Edit:
    def edit(inter: Rows, items: Rows) -> None:
        (inter, items)[rows_index].append(row)

    return edit


ROW_ERRORS = [
    pytest.param(
        _set(0, 3, 3, "abc"), "inter", 4, "timestamp", "'abc' is not a", id="ts"
    ),
    pytest.param(_set(0, 3, 3, "nan"), "inter", 4, "timestamp", "'nan'", id="ts-nan"),
    pytest.param(_set(0, 5, 3, "-inf"), "inter", 6, "timestamp", "'-inf'", id="ts-inf"),
    pytest.param(
        _set(0, 2, 0, ""), "inter", 3, "user_id", "user_id is empty", id="user"
    ),
    pytest.param(
        _set(0, 2, 1, " "), "inter", 3, "item_id", "item_id is empty", id="item"
    ),
    pytest.param(
        _set(1, 4, 0, ""), "item", 5, "item_id", "item id is empty", id="item-id"
    ),
    pytest.param(
        _append(1, ["3", "Again", "2000", "War"]),
        "item",
        8,
        "item_id",
        "already defined on line 4",
        id="duplicate-item",
    ),
    pytest.param(
        _append(0, ["1", "99", "3", "5"]),
        "inter",
        38,
        "item_id",
        "item '99' has no row in films.item",
        id="unknown-item",
    ),
    pytest.param(
        lambda inter, items: items[2].__setitem__(slice(1, 4), ["", "", ""]),
        "item",
        3,
        None,
        "item '2' has no text",
        id="item-without-text",
    ),
    pytest.param(
        _append(0, ["1", "2", "3"]), "inter", 38, None, "row has 3 cells", id="cells"
    ),
    pytest.param(
        _set(1, 6, 3, "Drama\tExtra"), "item", 7, None, "row has 5 cells", id="cells"
    ),
    pytest.param(
        _drop_column(0, 3),
        "inter",
        1,
        "timestamp",
        "columns found: user_id, item_id, rating",
        id="no-timestamp",
    ),
    pytest.param(
        _drop_column(0, 0), "inter", 1, "user_id", "required column", id="no-user"
    ),
    pytest.param(
        _drop_column(1, 0), "item", 1, "item_id", "columns found: title", id="no-id"
    ),
    pytest.param(
        lambda inter, items: [row.__delitem__(slice(1, 4)) for row in items],
        "item",
        1,
        None,
        "no text column",
        id="no-text-column",
    ),
    pytest.param(
        _set(0, 0, 3, "timestamp:date"), "inter", 1, None, "'timestamp:date'", id="type"
    ),
    pytest.param(
        _set(0, 0, 3, "timestamp"), "inter", 1, None, "name:type", id="untyped"
    ),
    pytest.param(
        _set(0, 0, 2, "user_id:token"), "inter", 1, "user_id", "appears twice", id="dup"
    ),
]


@pytest.mark.parametrize(("edit", "kind", "line", "column", "match"), ROW_ERRORS)
def test_load_domain_row_errors(
    tmp_path: Path,
    edit: Edit,
    kind: str,
    line: int,
    column: str | None,
    match: str,
) -> None:
    inter, items = base_rows()
    edit(inter, items)
    folder = write_atomic(tmp_path, inter, items)
    with pytest.raises(DataError, match=match) as caught:
        load_domain(folder)

    assert caught.value.path == tmp_path / f"films.{kind}"
    assert caught.value.line == line
    assert caught.value.column == column


def test_load_domain_unused_item_without_text(tmp_path: Path) -> None:
    inter, items = base_rows()
    items.append(["7", "", " ", ""])
    data = load_domain(write_atomic(tmp_path, inter, items))

    assert data.item_ids == ("1", "2", "3", "4", "5", "6")


def test_data_error_message_format(tmp_path: Path) -> None:
    inter, items = base_rows()
    inter[2][3] = "abc"
    folder = write_atomic(tmp_path, inter, items)
    with pytest.raises(DataError) as caught:
        load_domain(folder)

    prefix = f"{folder / 'films.inter'}:3: column 'timestamp': value 'abc' is not a "
    assert str(caught.value).startswith(prefix)
    assert "; write the timestamp as a number" in str(caught.value)


def test_data_error_pickles() -> None:
    error = DataError(Path("a.inter"), "bad value; fix it", 7, "timestamp")
    copy = pickle.loads(pickle.dumps(error))

    assert str(copy) == str(error)
    assert copy.line == 7
    assert copy.column == "timestamp"


def test_load_domain_csv_row_error_line(tmp_path: Path) -> None:
    inter, items = base_rows()
    # A quoted line break makes row 2 span lines 3-4, so row 3 starts on line 5.
    items[2][1] = "Two\nlines"
    items[3].append("extra")
    with pytest.raises(DataError, match="row has 5 cells") as caught:
        load_domain(write_csv(tmp_path, inter, items))

    assert caught.value.line == 5


def test_load_domain_csv_duplicate_column(tmp_path: Path) -> None:
    inter, items = base_rows()
    inter[0] = ["user_id", "item_id", "item_id:token", "timestamp"]
    with pytest.raises(DataError, match="appears twice") as caught:
        load_domain(write_csv(tmp_path, inter, items))

    assert caught.value.column == "item_id"
    assert caught.value.line == 1


def test_load_domain_invalid_utf8(tmp_path: Path) -> None:
    inter, items = base_rows()
    folder = write_atomic(tmp_path, inter, items)
    path = folder / "films.item"
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"Movie", b"Mov\xe9")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match="invalid UTF-8") as caught:
        load_domain(folder)

    assert caught.value.line == 3


def test_load_domain_empty_file(tmp_path: Path) -> None:
    inter, items = base_rows()
    folder = write_atomic(tmp_path, inter, items)
    (folder / "films.item").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="file is empty") as caught:
        load_domain(folder)

    assert caught.value.path == folder / "films.item"


def test_find_domain_files_atomic(tmp_path: Path) -> None:
    inter, items = base_rows()
    folder = write_atomic(tmp_path, inter, items)
    (folder / "films.user").write_text("user_id:token\n", encoding="utf-8")

    assert find_domain_files(folder) == (folder / "films.inter", folder / "films.item")


def test_find_domain_files_csv(tmp_path: Path) -> None:
    inter, items = base_rows()
    folder = write_csv(tmp_path, inter, items)

    expected = (folder / "films.inter.csv", folder / "films.item.csv")
    assert find_domain_files(folder) == expected


def _folder_missing(root: Path) -> tuple[Path, Path]:
    return root / "absent", root / "absent"


def _folder_empty(root: Path) -> tuple[Path, Path]:
    (root / "notes.txt").write_text("nothing here", encoding="utf-8")
    return root, root


def _both_formats(root: Path) -> tuple[Path, Path]:
    inter, items = base_rows()
    write_atomic(root, inter, items)
    write_csv(root, inter, items)
    return root, root


def _two_domains(root: Path) -> tuple[Path, Path]:
    inter, items = base_rows()
    write_atomic(root, inter, items, name="films")
    write_atomic(root, inter, items, name="books")
    return root, root


def _item_file_missing(root: Path) -> tuple[Path, Path]:
    inter, items = base_rows()
    write_atomic(root, inter, items)
    (root / "films.item").unlink()
    return root, root / "films.item"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (_folder_missing, "folder not found"),
        (_folder_empty, "no domain files found"),
        (_both_formats, "files in both formats found"),
        (_two_domains, "several domains found: 'books' .*'films'"),
        (_item_file_missing, "file not found"),
    ],
)
def test_find_domain_files_errors(
    tmp_path: Path, make: Callable[[Path], tuple[Path, Path]], match: str
) -> None:
    folder, error_path = make(tmp_path)
    with pytest.raises(DataError, match=match) as caught:
        find_domain_files(folder)

    assert caught.value.path == error_path
    assert caught.value.line is None


def test_split_positions(tmp_path: Path) -> None:
    inter, items = base_rows()
    data = load_domain(write_atomic(tmp_path, inter, items))
    split = split_leave_one_out(data)

    assert len(split.train) == data.n_users
    assert len(split.valid) == data.n_users
    assert len(split.test) == data.n_users
    for seq, train, valid, test in zip(
        data.sequences, split.train, split.valid, split.test, strict=True
    ):
        assert train == seq[:-2]
        assert valid == (seq[:-2], seq[-2])
        assert test == (seq[:-1], seq[-1])
        assert len(train) >= 3


def test_split_targets_per_user(tmp_path: Path) -> None:
    inter, items = base_rows()
    split = split_leave_one_out(load_domain(write_atomic(tmp_path, inter, items)))

    # User 3 rates items 3, 4, 5, 6, 1, 2 in this order.
    assert split.train[2] == (3, 4, 5, 6)
    assert split.valid[2][1] == 1
    assert split.test[2] == ((3, 4, 5, 6, 1), 2)


def test_split_rejects_short_sequence() -> None:
    data = DomainData(
        name="tiny",
        item_ids=("a", "b"),
        item_texts=("A", "B"),
        user_ids=("u1", "u2"),
        sequences=((1, 2, 1), (1, 2)),
        n_interactions=5,
    )
    with pytest.raises(ValueError, match="user 'u2' .* has 2 items"):
        split_leave_one_out(data)


def test_describe_domain_counts(tmp_path: Path) -> None:
    inter, items = base_rows()
    text = describe_domain(load_domain(write_atomic(tmp_path, inter, items), 4))

    assert "domain: films" in text
    assert "users: 6" in text
    assert "items: 6" in text
    assert "interactions: 36 (6.0 per user" in text
    assert "mean 4.0" in text
