"""Run `fedcdr-client` with markers at each secure-aggregation step, for fault tests.

Usage: python staged_client.py MARKER_DIR [client arguments...]

Before each step of a secure aggregation the client writes the empty file
``MARKER_DIR/<task>.<step>`` (steps: advertise, share, mask, sign, reveal),
and after its masked input is accepted it writes ``<task>.uploaded``. It saves
the plain vector it is about to mask as ``<task>.npy``. When the environment
variable FEDCDR_TEST_HOLD is ``<task>.<step>``, the client writes
``<task>.<step>.held`` at that step and sleeps there until it is killed.
When FEDCDR_TEST_PAUSE is ``<task>.<step>``, the client writes
``<task>.<step>.paused`` there and stops itself with SIGSTOP; it goes on with
the step once it receives SIGCONT.
"""

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from client import aggregation
from client.aggregation import SecureUpload

MARKERS = Path(sys.argv[1])
HOLD = os.environ.get("FEDCDR_TEST_HOLD", "")
PAUSE = os.environ.get("FEDCDR_TEST_PAUSE", "")


def _step(task_id: str, step: str) -> None:
    (MARKERS / f"{task_id}.{step}").touch()
    if HOLD == f"{task_id}.{step}":
        (MARKERS / f"{task_id}.{step}.held").touch()
        while True:
            time.sleep(60)
    if PAUSE == f"{task_id}.{step}":
        (MARKERS / f"{task_id}.{step}.paused").touch()
        os.kill(os.getpid(), signal.SIGSTOP)


class StagedUpload(SecureUpload):
    """SecureUpload with a marker before each coordinator call."""

    def __init__(self, coordinator, task, *args, **kwargs):
        super().__init__(
            _StagedCoordinator(coordinator, task.task_id), task, *args, **kwargs
        )
        self._plain_task_id = task.task_id

    def submit(self, vector):
        np.save(MARKERS / f"{self._plain_task_id}.npy", vector)
        super().submit(vector)


class _StagedCoordinator:
    """Forward calls to the real CoordinatorClient, marking each step first."""

    _STEPS = {
        "advertise_keys": "advertise",
        "share_keys": "share",
        "upload_payload": "mask",
        "consistency_check": "sign",
        "unmask": "reveal",
    }

    def __init__(self, inner, task_id):
        self._inner = inner
        self._task_id = task_id

    def __getattr__(self, name):
        method = getattr(self._inner, name)
        step = self._STEPS.get(name)
        if step is None:
            return method

        def staged(*args, **kwargs):
            _step(self._task_id, step)
            result = method(*args, **kwargs)
            if step == "mask":
                (MARKERS / f"{self._task_id}.uploaded").touch()
            return result

        return staged


aggregation.SecureUpload = StagedUpload  # type: ignore[misc]
import client.driver  # noqa: E402

client.driver.SecureUpload = StagedUpload  # type: ignore[misc]

from client.main import main  # noqa: E402

MARKERS.mkdir(parents=True, exist_ok=True)
sys.exit(main(sys.argv[2:]))
