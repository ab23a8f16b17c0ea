"""The transport and API test kits are imported by basename, as in their folders."""

from __future__ import annotations

import sys
from pathlib import Path

for kit in ("transport", "api"):
    path = str(Path(__file__).resolve().parent.parent / kit)
    if path not in sys.path:
        sys.path.append(path)
