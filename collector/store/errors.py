"""The store's error classes: every driver error is translated into one of them,
once per driver, in that driver's backend module.

    StoreError                 base; carries the backend name
    +-- StorePermanentError    bad URL, bad data, schema newer than the code: do not retry
    +-- StoreRetryableError    connection lost, lock timeout, serialisation failure: retry later

Ingest acts on the split: a permanent error parks the batch, a retryable one
leaves it unacknowledged for a later delivery.
"""

from __future__ import annotations

import re

_ADDR = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b|\b[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}\b")


class StoreError(Exception):
    def __init__(self, backend: str, why: str) -> None:
        super().__init__(f"{backend} store: {why}")
        self.backend, self.why = backend, why
        self.sqlstate: str | None = None

    @property
    def retryable(self) -> bool:
        return isinstance(self, StoreRetryableError)


class StorePermanentError(StoreError):
    """Retrying will not help: the input or the configuration is wrong."""


class StoreRetryableError(StoreError):
    """The database is unavailable or busy; the same call may succeed later."""


def first_line(e: BaseException) -> str:
    """A driver message fit for an error: its first line, server addresses masked
    (drivers name the host they failed to reach; no raw IP goes into an error)."""
    text = str(e).strip()
    return _ADDR.sub("<address>", text.splitlines()[0] if text else type(e).__name__)
