"""The coordinator's run store: one SQLite file recording what a run committed.

The store contains the run (its id, settings fingerprint, status and number
of starts) and the joined domains. It records every task attempt with its
outcome and the domains that acted in each of its stages. It keeps the
committed codebook steps and rounds with the SHA-256 of their checkpoint
files, the metrics the domains reported and the final reports. A restarted
coordinator reads it to resume the run after the last commit.

Checkpoint files are written before their commit row, so a crash between the
two leaves an uncommitted file that the resumed run overwrites. A commit row
whose file is missing or changed is an error at start, never a reason to start
afresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import fsync_directory
from common.config import CoordinatorConfig
from common.pb import federation_pb2 as pb

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STORE_FILE = "run.sqlite"
# Outcomes of a task attempt. The outcome is NULL while the attempt is in flight.
COMMITTED = "committed"
FAILED = "failed"
ABANDONED = "abandoned"
INTERRUPTED = "interrupted"
# Run status values.
RUNNING = "running"
DONE = "done"
ABORTED = "aborted"

_SCHEMA = """
CREATE TABLE run (
    run_id TEXT PRIMARY KEY,
    schema_version INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    starts INTEGER NOT NULL DEFAULT 0,
    aggregations INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE domains (
    domain TEXT PRIMARY KEY,
    n_users INTEGER NOT NULL,
    n_items INTEGER NOT NULL,
    n_interactions INTEGER NOT NULL,
    joined_at REAL NOT NULL
);
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    base_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    number INTEGER NOT NULL,
    start INTEGER NOT NULL,
    aggregation INTEGER NOT NULL,
    participants TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT,
    message TEXT NOT NULL DEFAULT ''
);
CREATE TABLE participants (
    task_id TEXT NOT NULL REFERENCES tasks(task_id),
    stage TEXT NOT NULL,
    domain TEXT NOT NULL,
    PRIMARY KEY (task_id, stage, domain)
);
CREATE TABLE commits (
    base_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    number INTEGER NOT NULL,
    task_id TEXT NOT NULL REFERENCES tasks(task_id),
    checkpoint TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    survivors TEXT NOT NULL,
    committed_at REAL NOT NULL,
    epsilon REAL,
    privacy TEXT
);
CREATE TABLE metrics (
    domain TEXT NOT NULL,
    model TEXT NOT NULL,
    round INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (domain, model, round)
);
CREATE TABLE finals (
    domain TEXT NOT NULL,
    model TEXT NOT NULL,
    PRIMARY KEY (domain, model)
);
CREATE TABLE reports (
    name TEXT PRIMARY KEY,
    content TEXT NOT NULL
);
"""
_TABLES = frozenset(
    {
        "run",
        "domains",
        "tasks",
        "participants",
        "commits",
        "metrics",
        "finals",
        "reports",
    }
)


class StoreError(RuntimeError):
    """The run store or a checkpoint it records is missing, corrupt or of
    another run; the message names the file and what to do."""


# Columns added to the commits table after the first release. A store
# created before them gets them at open, NULL in every earlier row.
_ADDED_COMMIT_COLUMNS = (("epsilon", "REAL"), ("privacy", "TEXT"))


@dataclass(frozen=True)
class Commit:
    """A committed codebook step (kind ``codebook``) or round (kind ``round``).

    ``epsilon`` is the largest user-level epsilon of any domain after the
    round, and ``privacy`` the whole record of
    :meth:`server.privacy.PrivacyLedger.round_record`; both are None for a
    codebook step and for a run without differential privacy.
    """

    base_id: str
    kind: str
    number: int
    task_id: str
    checkpoint: Path
    sha256: str
    survivors: tuple[str, ...]
    committed_at: float
    epsilon: float | None = None
    privacy: dict[str, Any] | None = None


@dataclass(frozen=True)
class TaskRecord:
    """One attempt of a task, as the status command lists it."""

    task_id: str
    kind: str
    number: int
    start: int
    participants: tuple[str, ...]
    started_at: float
    ended_at: float | None
    outcome: str | None
    message: str


def store_path(config: CoordinatorConfig) -> Path:
    """Return the store file of ``config``: ``store``, else state_dir/run.sqlite."""
    return config.store if config.store is not None else config.state_dir / STORE_FILE


def fingerprint(config: CoordinatorConfig) -> str:
    """Return the settings a resumed run must share with the first start, as JSON."""
    settings = {
        "model": dataclasses.asdict(config.model),
        "train": dataclasses.asdict(config.train),
        "secagg": dataclasses.asdict(config.secagg),
    }
    # Only when on, so runs stored before the [dp] section existed still resume.
    if config.dp.enabled:
        settings["dp"] = dataclasses.asdict(config.dp)
    return json.dumps(settings, sort_keys=True)


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunStore:
    """The SQLite store of one run; every method is thread-safe.

    Use :meth:`open` for a file and :meth:`in_memory` for tests and runs that
    need no resume.
    """

    def __init__(
        self, connection: sqlite3.Connection, state_dir: Path, label: str
    ) -> None:
        self._db = connection
        self._lock = threading.Lock()
        self.state_dir = state_dir
        self.label = label

    # Opening

    @classmethod
    def open(cls, config: CoordinatorConfig, create: bool = True) -> RunStore:
        """Open the store of ``config``'s run, creating it for a new run.

        Raises
        ------
        StoreError
            When the file is not a readable store of this run, or when it is
            missing although ``state_dir`` contains checkpoints of a run.
        """
        path = store_path(config)
        if not path.exists():
            if not create:
                raise StoreError(
                    f"run store {path} not found; check --config and state_dir, "
                    "or start the run first"
                )
            _refuse_orphaned_state(config, path)
            _create(config, path)
        elif not path.is_file():
            raise StoreError(f"run store {path} is not a file; set `store` to a file")
        try:
            connection = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30
            )
            store = cls(connection, config.state_dir, str(path))
            # Check before the first write, so a damaged file stays as found.
            store._check(config)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            store._add_missing_columns()
        except sqlite3.DatabaseError as error:
            raise StoreError(
                f"run store {path} is corrupt or not a fedcdr store ({error}); "
                "restore it from a backup, or move it and the state_dir away to "
                "start a new run"
            ) from None
        return store

    @classmethod
    def in_memory(cls, config: CoordinatorConfig) -> RunStore:
        """Open a store that lives in memory, so a restart cannot resume it."""
        connection = sqlite3.connect(
            ":memory:", isolation_level=None, check_same_thread=False
        )
        _initialize(connection, config)
        store = cls(connection, config.state_dir, ":memory:")
        store._check(config)
        return store

    def _check(self, config: CoordinatorConfig) -> None:
        """Check the file's integrity, its tables and that it is ``config``'s run."""
        check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        tables = {
            row[0]
            for row in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        }
        if tables != _TABLES:
            raise sqlite3.DatabaseError(
                f"tables {sorted(tables)} differ from {sorted(_TABLES)}"
            )
        self._check_run(config)

    def _check_run(self, config: CoordinatorConfig) -> None:
        row = self._db.execute(
            "SELECT run_id, schema_version, fingerprint FROM run"
        ).fetchall()
        if len(row) != 1:
            raise sqlite3.DatabaseError(f"the run table has {len(row)} rows, not 1")
        run_id, version, stored = row[0]
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"run store {self.label} has schema version {version}, this "
                f"coordinator reads version {SCHEMA_VERSION}; use the fedcdr "
                "version that created it"
            )
        if run_id != config.run_id:
            raise StoreError(
                f"run store {self.label} belongs to run {run_id!r}, but the config "
                f"says run_id = {config.run_id!r}; use that run's config, or "
                "another state_dir for a new run"
            )
        changed = _changed_keys(json.loads(stored), json.loads(fingerprint(config)))
        if changed:
            raise StoreError(
                f"run {run_id!r} in {self.label} was started with other settings: "
                f"{', '.join(changed)} changed; restore them to resume the run, or "
                "use another run_id and state_dir for a new run"
            )

    def _add_missing_columns(self) -> None:
        """Add the commit columns that a store from an older fedcdr lacks."""
        present = {row[1] for row in self._query("PRAGMA table_info(commits)")}
        for name, kind in _ADDED_COMMIT_COLUMNS:
            if name not in present:
                with self._transaction() as db:
                    db.execute(f"ALTER TABLE commits ADD COLUMN {name} {kind}")
                logger.info("run store %s: added column commits.%s", self.label, name)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    # Run

    def begin_start(self) -> int:
        """Count a start of the coordinator and return its number, from 1.

        Task attempts left in flight by an earlier process are marked
        ``interrupted``, because their results were never committed.
        """
        with self._transaction() as db:
            db.execute("UPDATE run SET starts = starts + 1")
            interrupted = db.execute(
                "UPDATE tasks SET outcome = ?, ended_at = ?, message = ? "
                "WHERE outcome IS NULL",
                (INTERRUPTED, time.time(), "the coordinator stopped during the task"),
            ).rowcount
            starts = db.execute("SELECT starts FROM run").fetchone()[0]
        if interrupted:
            logger.warning(
                "start=%d: %d task attempt(s) of the previous start were in flight "
                "and are restarted",
                starts,
                interrupted,
            )
        return int(starts)

    def status(self) -> tuple[str, str]:
        """Return the run status and the message of its last abort or stop."""
        status, message = self._query("SELECT status, message FROM run")[0]
        return str(status), str(message)

    def set_status(self, status: str, message: str = "") -> None:
        """Set the run status (running, done or aborted) and its message."""
        with self._transaction() as db:
            db.execute("UPDATE run SET status = ?, message = ?", (status, message))

    def run_row(self) -> dict[str, Any]:
        """Return the run's id, status, message, starts and creation time."""
        row = self._query(
            "SELECT run_id, status, message, starts, created_at FROM run"
        )[0]
        keys = ("run_id", "status", "message", "starts", "created_at")
        return dict(zip(keys, row, strict=True))

    def next_aggregation(self) -> int:
        """Return a secure-aggregation number never handed out before in this run.

        Clients derive their per-aggregation keys from this number, so a task
        restarted after a crash gets fresh keys.
        """
        with self._transaction() as db:
            db.execute("UPDATE run SET aggregations = aggregations + 1")
            return int(db.execute("SELECT aggregations FROM run").fetchone()[0])

    # Domains and their reports

    def record_join(self, domain: str, stats: pb.DomainStats) -> None:
        """Record that ``domain`` joined, with its sizes; a rejoin replaces them."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO domains VALUES (?, ?, ?, ?, ?)",
                (
                    domain,
                    stats.n_users,
                    stats.n_items,
                    stats.n_interactions,
                    time.time(),
                ),
            )

    def domains(self) -> dict[str, pb.DomainStats]:
        """Return the sizes of every domain that joined, by domain."""
        rows = self._query(
            "SELECT domain, n_users, n_items, n_interactions FROM domains "
            "ORDER BY domain"
        )
        return {
            name: pb.DomainStats(n_users=u, n_items=i, n_interactions=n)
            for name, u, i, n in rows
        }

    def record_metrics(
        self,
        domain: str,
        model: str,
        rounds: list[pb.RoundMetrics],
        final: bool,
    ) -> None:
        """Record ``domain``'s metrics of ``model``; a round sent again replaces the old."""
        with self._transaction() as db:
            for metrics in rounds:
                db.execute(
                    "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)",
                    (domain, model, metrics.round, metrics.SerializeToString()),
                )
            if final:
                db.execute(
                    "INSERT OR IGNORE INTO finals VALUES (?, ?)", (domain, model)
                )

    def metrics(self) -> dict[str, dict[str, dict[int, pb.RoundMetrics]]]:
        """Return every reported round, by domain, model and round."""
        result: dict[str, dict[str, dict[int, pb.RoundMetrics]]] = {}
        rows = self._query(
            "SELECT domain, model, round, data FROM metrics "
            "ORDER BY domain, model, round"
        )
        for domain, model, round_index, data in rows:
            metrics = pb.RoundMetrics.FromString(data)
            result.setdefault(domain, {}).setdefault(model, {})[round_index] = metrics
        return result

    def finals(self) -> dict[str, set[str]]:
        """Return, by domain, the models whose final report arrived."""
        result: dict[str, set[str]] = {}
        for domain, model in self._query("SELECT domain, model FROM finals"):
            result.setdefault(domain, set()).add(model)
        return result

    # Tasks and commits

    def begin_task(
        self,
        task_id: str,
        base_id: str,
        kind: str,
        number: int,
        start: int,
        aggregation: int,
        participants: frozenset[str],
    ) -> None:
        """Record a task attempt as in flight."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO tasks (task_id, base_id, kind, number, start, "
                "aggregation, participants, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    base_id,
                    kind,
                    number,
                    start,
                    aggregation,
                    ",".join(sorted(participants)),
                    time.time(),
                ),
            )

    def record_stage(self, task_id: str, stage: str, domains: set[str]) -> None:
        """Record the domains that acted in one stage of a task attempt."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO participants VALUES (?, ?, ?)",
                [(task_id, stage, domain) for domain in sorted(domains)],
            )

    def end_task(self, task_id: str, outcome: str, message: str = "") -> None:
        """Record the outcome of a task attempt that committed nothing."""
        with self._transaction() as db:
            db.execute(
                "UPDATE tasks SET outcome = ?, ended_at = ?, message = ? "
                "WHERE task_id = ? AND outcome IS NULL",
                (outcome, time.time(), message, task_id),
            )

    def commit(
        self,
        task_id: str,
        kind: str,
        number: int,
        checkpoint: Path,
        survivors: set[str],
        privacy: dict[str, Any] | None = None,
    ) -> Commit:
        """Commit a task whose checkpoint file is written and synced.

        ``privacy`` is the round's privacy record; its ``epsilon`` is also
        stored in a column of its own.

        Raises
        ------
        RuntimeError
            When the task was committed before, so no round is applied twice.
        """
        digest = file_sha256(checkpoint)
        relative = checkpoint.relative_to(self.state_dir)
        now = time.time()
        epsilon = None if privacy is None else float(privacy["epsilon"])
        with self._transaction() as db:
            base_id = db.execute(
                "SELECT base_id FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            if base_id is None:
                raise RuntimeError(f"task {task_id} was never begun in the store")
            try:
                db.execute(
                    "INSERT INTO commits (base_id, kind, number, task_id, "
                    "checkpoint, sha256, survivors, committed_at, epsilon, privacy) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        base_id[0],
                        kind,
                        number,
                        task_id,
                        str(relative),
                        digest,
                        ",".join(sorted(survivors)),
                        now,
                        epsilon,
                        None if privacy is None else json.dumps(privacy),
                    ),
                )
            except sqlite3.IntegrityError:
                raise RuntimeError(
                    f"task {base_id[0]} is already committed; a round is never "
                    "applied twice"
                ) from None
            db.execute(
                "UPDATE tasks SET outcome = ?, ended_at = ? WHERE task_id = ?",
                (COMMITTED, now, task_id),
            )
        return Commit(
            base_id[0],
            kind,
            number,
            task_id,
            relative,
            digest,
            tuple(sorted(survivors)),
            now,
            epsilon,
            privacy,
        )

    def commits(self, kind: str | None = None) -> list[Commit]:
        """Return the commits of ``kind`` (all when None), oldest first."""
        sql = (
            "SELECT base_id, kind, number, task_id, checkpoint, sha256, survivors, "
            "committed_at, epsilon, privacy FROM commits"
        )
        parameters: tuple[Any, ...] = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            parameters = (kind,)
        rows = self._query(sql + " ORDER BY committed_at, number", parameters)
        return [
            Commit(
                base_id=row[0],
                kind=row[1],
                number=int(row[2]),
                task_id=row[3],
                checkpoint=Path(row[4]),
                sha256=row[5],
                survivors=tuple(s for s in row[6].split(",") if s),
                committed_at=float(row[7]),
                epsilon=None if row[8] is None else float(row[8]),
                privacy=None if row[9] is None else json.loads(row[9]),
            )
            for row in rows
        ]

    def last_commit(self, kind: str) -> Commit | None:
        """Return the commit of ``kind`` with the highest number, or None."""
        commits = self.commits(kind)
        return max(commits, key=lambda c: c.number) if commits else None

    def tasks(self) -> list[TaskRecord]:
        """Return every task attempt, in the order they began."""
        rows = self._query(
            "SELECT task_id, kind, number, start, participants, started_at, "
            "ended_at, outcome, message FROM tasks ORDER BY started_at, rowid"
        )
        return [
            TaskRecord(
                task_id=row[0],
                kind=row[1],
                number=int(row[2]),
                start=int(row[3]),
                participants=tuple(s for s in row[4].split(",") if s),
                started_at=float(row[5]),
                ended_at=row[6],
                outcome=row[7],
                message=row[8],
            )
            for row in rows
        ]

    def stage_participants(self, task_id: str) -> dict[str, list[str]]:
        """Return the domains that acted in each recorded stage of a task attempt."""
        result: dict[str, list[str]] = {}
        rows = self._query(
            "SELECT stage, domain FROM participants WHERE task_id = ? ORDER BY rowid",
            (task_id,),
        )
        for stage, domain in rows:
            result.setdefault(stage, []).append(domain)
        return result

    def checkpoint_path(self, commit: Commit) -> Path:
        """Return the absolute path of a commit's checkpoint file."""
        return self.state_dir / commit.checkpoint

    def verify_checkpoints(self) -> None:
        """Check that every committed checkpoint exists with its recorded SHA-256.

        Raises
        ------
        StoreError
            Naming the first missing or changed file.
        """
        for commit in self.commits():
            path = self.checkpoint_path(commit)
            if not path.is_file():
                raise StoreError(
                    f"checkpoint {path} of committed {commit.base_id} is missing; "
                    "restore state_dir from a backup, because the run cannot "
                    "resume without it"
                )
            if file_sha256(path) != commit.sha256:
                raise StoreError(
                    f"checkpoint {path} of committed {commit.base_id} does not match "
                    f"the SHA-256 recorded in {self.label}; it is corrupt or was "
                    "replaced, so restore it from a backup"
                )

    # Reports

    def save_report(self, name: str, content: str) -> None:
        """Store a report file's content (metrics.json or history.json)."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO reports VALUES (?, ?)", (name, content))

    def report(self, name: str) -> str | None:
        """Return a stored report's content, or None before the run finished."""
        rows = self._query("SELECT content FROM reports WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None


def _initialize(connection: sqlite3.Connection, config: CoordinatorConfig) -> None:
    connection.executescript(_SCHEMA)
    connection.execute(
        "INSERT INTO run (run_id, schema_version, fingerprint, status, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (config.run_id, SCHEMA_VERSION, fingerprint(config), RUNNING, time.time()),
    )


def _create(config: CoordinatorConfig, path: Path) -> None:
    """Create a new store under a temporary name and rename it into place, so
    a crash never leaves a store without its schema at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.new")
    temporary.unlink(missing_ok=True)
    connection = sqlite3.connect(temporary, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=DELETE")
        _initialize(connection, config)
    finally:
        connection.close()
    with temporary.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)
    logger.info("run=%s created run store %s", config.run_id, path)


def _refuse_orphaned_state(config: CoordinatorConfig, path: Path) -> None:
    """Raise StoreError when state_dir holds a run's files but no store."""
    state = config.state_dir
    leftovers = [
        p
        for p in (
            state / "checkpoints",
            state / "codebook",
            state / "metrics.json",
            path.with_name(path.name + "-wal"),
        )
        if p.exists() and (not p.is_dir() or any(p.iterdir()))
    ]
    if leftovers:
        raise StoreError(
            f"run store {path} is missing, but {leftovers[0]} is from an earlier "
            "run; restore the store from a backup to resume, or move state_dir "
            "away to start a new run"
        )


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        changed = []
        for key in sorted(set(old) | set(new)):
            changed += _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return changed
    if old != new:
        return [f"{prefix.rstrip('.')} ({old!r} -> {new!r})"]
    return []
