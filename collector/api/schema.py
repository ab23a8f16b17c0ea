"""Kept for callers not yet moved (`collector.runtime`): the query side's tables
are store migrations now (`collector/store/migrations/*/0004_query_tables.sql`);
open them with `collector.store.open_db`."""

from collector.store import open_db as open_api_db

__all__ = ["open_api_db"]
