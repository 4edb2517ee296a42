"""Write files so a crash leaves either the old content or the new, never a mix."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and a rename.

    The temporary file lives in the same directory, so the rename is atomic on
    POSIX file systems. The directory is fsynced afterwards, so the rename itself
    survives a power loss.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write UTF-8 ``text`` like :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, text.encode("utf-8"), mode)


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry change (a rename or a new file) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
