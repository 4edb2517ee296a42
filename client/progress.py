"""Progress bars of a client's local epochs, drawn only on a terminal."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from common.terminal import is_terminal, logs_through

# Called after each epoch with the epoch number (1-based) and its mean loss.
EpochCallback = Callable[[int, float], None]


def _ignore_epoch(epoch: int, loss: float) -> None:
    """Accept an epoch report and draw nothing, for output that is not a terminal."""


class EpochProgress:
    """Draw one progress bar per round of local epochs on ``stream``.

    When ``stream`` is not a terminal nothing is drawn, and the client's log
    lines are the only output.
    """

    def __init__(self, domain: str, stream: TextIO | None = None) -> None:
        self.domain = domain
        self.stream = stream if stream is not None else sys.stderr
        self.live = is_terminal(self.stream)

    @contextmanager
    def epochs(self, label: str, total: int) -> Iterator[EpochCallback]:
        """Yield the callback that advances a bar of ``total`` epochs named ``label``."""
        if not self.live:
            yield _ignore_epoch
            return
        console = Console(file=self.stream, force_terminal=True)
        progress = Progress(
            TextColumn(f"{self.domain} {label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epochs, loss {task.fields[loss]}"),
            console=console,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        bar = progress.add_task(label, total=total, loss="-")

        def advance(epoch: int, loss: float) -> None:
            loss_text = f"{loss:.4f}" if math.isfinite(loss) else "-"
            progress.update(bar, completed=epoch, loss=loss_text, refresh=True)

        with progress, logs_through(console):
            yield advance
