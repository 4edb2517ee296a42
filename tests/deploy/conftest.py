"""Put the deployment tests' helper modules on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# The helper modules beside this file and scripts/build_image.py import by
# name; pytest's importlib mode does not put their folders on sys.path.
for folder in (HERE, ROOT / "scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
