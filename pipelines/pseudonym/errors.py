"""The pseudonymiser's errors; none of their messages ever contains a raw value or key.

    PseudonymError (ValueError)
    ├── KeyMaterialError   a key that cannot be used
    └── PolicyError        a privacy policy or mode that cannot be applied
"""

from __future__ import annotations


class PseudonymError(ValueError):
    """Root of the pseudonymiser's errors."""


class KeyMaterialError(PseudonymError):
    """A key that cannot be used."""


class PolicyError(PseudonymError):
    """A privacy policy or mode that cannot be applied."""
