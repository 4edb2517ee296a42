"""The coordinator's live round table on a terminal, or one log line per task.

A thread polls :meth:`Federation.progress` twice a second. On a terminal it
redraws a table with one row per task (round, stage, domains present,
dropped, bytes in and out, the epsilon spent when DP is on, latest
validation NDCG@10 per domain). Otherwise
it logs one line per finished task.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from common.pb import federation_pb2 as pb
from common.terminal import is_terminal, logs_through
from server.federation import FINISHED_KEPT, Federation, RunProgress, TaskProgress

logger = logging.getLogger(__name__)

# Rows kept on screen; older tasks scroll off the top.
MAX_ROWS = 12
POLL_S = 0.5


@dataclass
class Row:
    """One task's line of the round table."""

    task_id: str
    label: str
    stage: str = ""
    present: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    bytes_in: int = 0
    bytes_out: int = 0
    valid_ndcg: dict[str, float] = field(default_factory=dict)
    finished: bool = False
    epsilon: float | None = None


def task_label(task: TaskProgress) -> str:
    """Return the table's name of a task: ``round 3``, ``codebook 1``, ``finish``."""
    if task.kind == pb.TASK_KIND_TRAIN:
        return f"round {task.round}"
    if task.kind == pb.TASK_KIND_FINISH:
        return "finish"
    return f"codebook {task.step}"


class RoundTable:
    """Rows of the round table, folded from successive progress snapshots."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.rows: list[Row] = []
        self.max_rows = max_rows
        self.progress: RunProgress | None = None
        self._by_id: dict[str, Row] = {}
        # Ids of finished tasks, oldest first, at least as many as a snapshot
        # lists, so no finished task is counted twice.
        self._done: dict[str, None] = {}

    def update(self, progress: RunProgress) -> list[Row]:
        """Fold in one snapshot.

        Returns
        -------
        list[Row]
            Rows whose task finished since the last snapshot, oldest first,
            each returned once.
        """
        self.progress = progress
        newly_finished = []
        tasks = list(progress.finished)
        if progress.task is not None and not progress.task.finished:
            tasks.append(progress.task)
        for task in tasks:
            if task.task_id in self._done:
                continue
            row = self._row(task)
            row.stage = task.stage
            row.present = tuple(sorted(task.present))
            row.dropped = tuple(sorted(task.dropped))
            row.bytes_in = task.bytes_in
            row.bytes_out = task.bytes_out
            row.valid_ndcg = dict(progress.valid_ndcg)
            row.epsilon = task.epsilon
            if task.finished:
                row.finished = True
                newly_finished.append(row)
                self._remember_done(task.task_id)
        return newly_finished

    def _remember_done(self, task_id: str) -> None:
        self._done[task_id] = None
        while len(self._done) > 2 * FINISHED_KEPT:
            del self._done[next(iter(self._done))]

    def _row(self, task: TaskProgress) -> Row:
        """Return the row of ``task``, adding it (and dropping the oldest) if new."""
        row = self._by_id.get(task.task_id)
        if row is None:
            row = Row(task_id=task.task_id, label=task_label(task))
            self._by_id[task.task_id] = row
            self.rows.append(row)
            for old in self.rows[: -self.max_rows]:
                del self._by_id[old.task_id]
            del self.rows[: -self.max_rows]
        return row


def format_bytes(count: int) -> str:
    """Return a byte count with a binary unit: ``512 B``, ``1.5 KiB``, ``3.2 MiB``."""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _ndcg(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render(
    table: RoundTable,
    run_id: str,
    domains: Sequence[str],
    max_rows: int | None = None,
    privacy: bool = False,
) -> Table:
    """Build the rich table of the last ``max_rows`` rows (all when None).

    Long cells are cut with an ellipsis instead of wrapped, so each task stays
    on one line of a narrow terminal. Present is ``taking part/participants``,
    and each domain has a column of its latest validation NDCG@10. With
    ``privacy``, an epsilon column shows the user-level epsilon spent once
    each round commits.
    """
    progress = table.progress
    stage = progress.stage if progress is not None else "starting"
    joined = sorted(progress.joined) if progress is not None else []
    view = Table(
        title=f"run {run_id}: {stage}, joined {len(joined)} of {len(domains)}",
        title_justify="left",
        caption="domain columns: latest validation NDCG@10",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
        collapse_padding=True,
    )
    # On a narrow terminal the stage and dropped columns give way first.
    view.add_column("task", no_wrap=True)
    view.add_column("stage", overflow="ellipsis", max_width=17)
    view.add_column("present", justify="right", no_wrap=True)
    view.add_column("dropped", overflow="ellipsis")
    view.add_column("in", justify="right", no_wrap=True)
    view.add_column("out", justify="right", no_wrap=True)
    if privacy:
        view.add_column("epsilon", justify="right", no_wrap=True)
    for domain in domains:
        view.add_column(
            domain, justify="right", no_wrap=True, overflow="ellipsis", min_width=6
        )
    rows = table.rows if max_rows is None else table.rows[-max(1, max_rows) :]
    for row in rows:
        participants = len(row.present) + len(row.dropped)
        cells = [
            row.label,
            row.stage,
            f"{len(row.present)}/{participants}",
            ",".join(row.dropped) or "-",
            format_bytes(row.bytes_in),
            format_bytes(row.bytes_out),
        ]
        if privacy:
            cells.append("-" if row.epsilon is None else f"{row.epsilon:.3g}")
        cells += [_ndcg(row.valid_ndcg.get(domain)) for domain in domains]
        view.add_row(*cells)
    return view


def format_row(row: Row) -> str:
    """Return a finished row as one log line."""
    ndcg = " ".join(f"{d}={v:.4f}" for d, v in sorted(row.valid_ndcg.items()))
    epsilon = "" if row.epsilon is None else f"epsilon={row.epsilon:.4g} "
    return (
        f"task={row.task_id} ({row.label}) stage={row.stage} "
        f"present={','.join(row.present) or '-'} "
        f"dropped={','.join(row.dropped) or '-'} "
        f"bytes_in={row.bytes_in} bytes_out={row.bytes_out} "
        f"{epsilon}valid_ndcg@10: {ndcg or '-'}"
    )


class RoundTableDisplay:
    """Draw the round table on ``stream`` while it is a terminal, else log rows.

    Parameters
    ----------
    federation
        The run whose progress is shown.
    stream
        Where the live table goes; its ``isatty()`` picks the mode.
    """

    def __init__(
        self,
        federation: Federation,
        stream: TextIO,
        poll_s: float = POLL_S,
    ) -> None:
        self.federation = federation
        self.live = is_terminal(stream)
        self.table = RoundTable()
        self._stream = stream
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="round-table", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Draw or log the last state and stop the thread."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _poll(self) -> list[Row]:
        return self.table.update(self.federation.progress())

    def _run(self) -> None:
        try:
            self._show()
        except Exception:
            # The display must never stop the run, so it only logs its failure.
            logger.exception("the round table failed and is off for this run")

    def _show(self) -> None:
        if not self.live:
            while True:
                stopping = self._stop.wait(self._poll_s)
                for row in self._poll():
                    logger.info("%s", format_row(row))
                if stopping:
                    return
        config = self.federation.config
        console = Console(file=self._stream, force_terminal=True)
        # Title, header and rule take 4 lines; leave a few for log lines.
        fit = max(1, console.size.height - 8)

        def view() -> Table:
            return render(
                self.table, config.run_id, config.domains, fit, config.dp.enabled
            )

        with (
            Live(
                view(),
                console=console,
                auto_refresh=False,
                redirect_stdout=False,
                redirect_stderr=False,
            ) as live,
            logs_through(console),
        ):
            while True:
                stopping = self._stop.wait(self._poll_s)
                self._poll()
                live.update(view(), refresh=True)
                if stopping:
                    return
