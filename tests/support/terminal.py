"""Read what a process or a display wrote to a pty or a pipe, for tty tests."""

import os
import time


def read_available(fd: int, timeout_s: float = 1.0) -> str:
    """Read from ``fd`` until end of file, a closed pty, or ``timeout_s`` passes."""
    chunks = []
    deadline = time.monotonic() + timeout_s
    os.set_blocking(fd, False)
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            time.sleep(0.05)
            continue
        except OSError:
            # Linux raises EIO on the primary side once the pty's other end closes.
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
