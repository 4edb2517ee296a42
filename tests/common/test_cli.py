"""configure_logging: INFO lines reach standard error in a fresh process."""

import subprocess
import sys

SCRIPT = """
import logging
import opacus.utils.module_utils  # calls logging.basicConfig when imported
from common.cli import configure_logging
configure_logging("INFO")
logging.getLogger("fedcdr.test").info("round=1 committed")
"""


def test_info_lines_survive_a_library_that_configures_logging():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    assert "INFO fedcdr.test: round=1 committed" in result.stderr
