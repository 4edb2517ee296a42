"""Run `fedcdr-coordinator` that stops at one chosen point, for kill tests.

Usage: python held_coordinator.py MARKER_DIR [coordinator arguments...]

The environment variable FEDCDR_TEST_COORDINATOR_HOLD names the point as
``<task>:<point>``, where task is a task id without the start suffix
(``train-2`` also matches ``train-2.3``) and point is a secure-aggregation
stage about to close (ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT,
CONSISTENCY_CHECK, UNMASK), ``checkpoint`` (the round's checkpoint file is
written but not committed) or ``committed`` (the commit is in the store).
There the coordinator writes ``MARKER_DIR/<task>.<point>.held`` and sleeps
until it is killed.
"""

import os
import sys
import time
from pathlib import Path

from server.secagg import SecAggSession
from server.store import RunStore

MARKERS = Path(sys.argv[1])
HOLD = os.environ.get("FEDCDR_TEST_COORDINATOR_HOLD", "")


def _hold_at(task_id: str, point: str) -> None:
    base = task_id.split(".")[0]
    if HOLD == f"{base}:{point}":
        (MARKERS / f"{base}.{point}.held").touch()
        while True:
            time.sleep(60)


_close_stage = SecAggSession.close_stage


def _held_close_stage(self, task_id):
    _hold_at(task_id, self.stage.name)
    return _close_stage(self, task_id)


_commit = RunStore.commit


def _held_commit(self, task_id, *args, **kwargs):
    _hold_at(task_id, "checkpoint")
    result = _commit(self, task_id, *args, **kwargs)
    _hold_at(task_id, "committed")
    return result


SecAggSession.close_stage = _held_close_stage
RunStore.commit = _held_commit

from server.main import main  # noqa: E402

MARKERS.mkdir(parents=True, exist_ok=True)
sys.exit(main(sys.argv[2:]))
