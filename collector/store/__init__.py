"""Record storage: a `Store` protocol with SQLite (embedded) and PostgreSQL backends."""

from collector.store.base import (
    BatchMeta,
    Store,
    StoreError,
    StorePermanentError,
    StoreRetryableError,
    TaggedRecord,
    open_store,
)

__all__ = ["BatchMeta", "Store", "StoreError", "StorePermanentError", "StoreRetryableError",
           "TaggedRecord", "open_store"]
