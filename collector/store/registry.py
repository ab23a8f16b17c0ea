"""URL scheme -> backend factory, the one place a store URL's scheme is read.

Backends are named by import path and loaded on first use, so this module (and
`base`, which re-exports `open_store`) imports no backend: adding a backend is
its module, its migrations folder and one line here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from collector.store.errors import StorePermanentError

if TYPE_CHECKING:
    from collector.store.base import SqlStore

# scheme -> "module:class"; the class has `from_url(url, **options)`.
BACKENDS: dict[str, str] = {
    "sqlite": "collector.store.sqlite:SqliteStore",
    "postgresql": "collector.store.postgres:PostgresStore",
    "postgres": "collector.store.postgres:PostgresStore",
}


def scheme_of(url: object) -> str:
    """The URL's scheme if a backend serves it; never echoes the rest (it may hold a
    password or an address)."""
    if not isinstance(url, str):
        raise StorePermanentError("any", "store URL must be a string")
    scheme = urlsplit(url).scheme.lower() if ":" in url else ""
    if scheme not in BACKENDS:
        shown = scheme or url.split(":", 1)[0][:20]
        raise StorePermanentError("any", f"unsupported store URL scheme {shown!r}; use "
                                  "sqlite:///path or postgresql://...")
    return scheme


def _factory(scheme: str) -> Any:
    module, _, name = BACKENDS[scheme].partition(":")
    return getattr(importlib.import_module(module), name)


def resolve_url(url: str, base: Path) -> str:
    """The URL as a config file means it: checked, and whatever the backend reads as
    relative (a SQLite path) taken relative to `base`, the config file's folder."""
    resolve = getattr(_factory(scheme_of(url)), "resolve_url", None)
    return url if resolve is None else str(resolve(url, base))


def open_store(url: str, **options: Any) -> SqlStore:
    """`sqlite:///relative.db`, `sqlite:////absolute.db`, `sqlite:///:memory:`, or
    `postgresql://...` (query `schema=NAME` picks a schema, `partition_days=N` the
    partition width). The store is not migrated: call `migrate()` (or `open_db`)."""
    store: SqlStore = _factory(scheme_of(url)).from_url(url, **options)
    return store


def open_db(url: str, *, migrate: bool = True, **options: Any) -> SqlStore:
    """A store with the whole schema in force (records, batches, the address index,
    users, DSR requests, audit log): what the query API and the CLI start from."""
    store = open_store(url, **options)
    try:
        if migrate:
            store.migrate()
        elif store.schema_version() == 0:
            raise StorePermanentError(store.backend, "the store has no schema yet; run the "
                                      "collector or `privtel api serve` first")
    except BaseException:
        store.close()
        raise
    return store
