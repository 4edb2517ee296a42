"""Run `fedcdr-coordinator` while recording every path the process opens or lists.

Usage: python audited_coordinator.py AUDIT_LOG [coordinator arguments...]
"""

import os
import sys

_log = open(sys.argv[1], "w", buffering=1)  # noqa: SIM115 - open for the process lifetime


def _record(event: str, args: tuple) -> None:
    if event in ("open", "os.listdir", "os.scandir") and args:
        path = args[0]
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, str):
            _log.write(f"{event}\t{os.path.abspath(path)}\n")


sys.addaudithook(_record)

from server.main import main  # noqa: E402

sys.exit(main(sys.argv[2:]))
