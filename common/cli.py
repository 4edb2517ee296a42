"""Command-line pieces both entry points share: the log-level flag and its setup."""

from __future__ import annotations

import argparse
import logging
import sys

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-level``, case-insensitive, defaulting to INFO."""
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=LOG_LEVELS,
        type=str.upper,
        help="logging level (INFO)",
    )


def configure_logging(level: str) -> None:
    """Send log records of ``level`` and above to standard error, with times."""
    root = logging.getLogger()
    # Opacus calls logging.basicConfig when imported, which would turn ours into
    # a no-op at the WARNING level; drop such plain stderr handlers first.
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream in (
            sys.stderr,
            sys.__stderr__,
        ):
            root.removeHandler(handler)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
