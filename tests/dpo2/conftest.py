"""The API tests' builders (`api_kit`) serve these tests too: a seeded store
whose records were pseudonymised with known tenant keys, users, TOTP codes."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from api_kit import env

__all__ = ["env"]
