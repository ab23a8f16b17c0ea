"""Record storage: one seam (`SqlStore` + `Dialect` + one migration scheme) with
SQLite (embedded) and PostgreSQL backends chosen by URL scheme."""

from collector.store.base import (
    BatchMeta,
    Cursor,
    Dialect,
    SqlStore,
    Store,
    StoreError,
    StorePermanentError,
    StoreRetryableError,
    TaggedRecord,
    open_db,
    open_store,
)

Db = SqlStore  # what the query side (search, DSR, auth, audit) is handed

__all__ = ["BatchMeta", "Cursor", "Db", "Dialect", "SqlStore", "Store", "StoreError",
           "StorePermanentError", "StoreRetryableError", "TaggedRecord", "open_db",
           "open_store"]
