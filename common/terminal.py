"""Live terminal output (round table, progress bars) beside plain log lines.

Live displays are drawn only when their stream is a terminal. While one is
drawn, log records that would go to a terminal are printed through the
display's console, so they scroll above it instead of breaking it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console


def is_terminal(stream: TextIO) -> bool:
    """Return True when ``stream`` is an open terminal (a tty or a pty)."""
    try:
        return not stream.closed and stream.isatty()
    except (AttributeError, ValueError):
        return False


class _ConsoleWriter:
    """File-like object that prints each write through a rich console."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def write(self, text: str) -> int:
        # StreamHandler writes one record and its newline in one call.
        self._console.out(text.rstrip("\n"), highlight=False)
        return len(text)

    def flush(self) -> None:
        self._console.file.flush()


@contextmanager
def logs_through(console: Console) -> Iterator[None]:
    """Send the root logger's terminal output through ``console`` while inside."""
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and is_terminal(handler.stream)
    ]
    writer = _ConsoleWriter(console)
    previous = [handler.setStream(writer) for handler in handlers]  # type: ignore[arg-type]
    try:
        yield
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            handler.setStream(stream)
