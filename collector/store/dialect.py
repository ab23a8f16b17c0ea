"""What differs between SQL backends, said once per backend.

Code above the store (search, DSR, auth, audit) writes one SQL text with `?`
placeholders and asks the store's `Dialect` for the few pieces that differ
(boolean literals, JSON decoding, case-insensitive match, advisory locks,
row locks, statistics). It never asks which backend it runs on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson


class Dialect:
    """The base speaks SQLite-flavoured SQL; a backend overrides what it spells
    differently. Instances are stateless and shared."""

    name = "sql"
    true, false = "1", "0"
    row_lock = ""

    def sql(self, text: str) -> str:
        """The driver's placeholder style from the seam's `?`."""
        return text

    def bool(self, value: bool) -> Any:
        return int(value)

    def json(self, value: Any) -> Any:
        """A JSON column as Python, whichever way the driver hands it over."""
        if isinstance(value, bytes | str):
            return orjson.loads(value)
        return value

    def ilike(self, column: str) -> str:
        """A case-insensitive `LIKE ?` on a text or JSON column, `\\` escaping."""
        return f"{column} LIKE ? ESCAPE '\\'"

    def lock(self, cur: Cursor, key: int) -> None:
        """A transaction-scoped lock on `key` across processes. Backends whose write
        transactions already exclude each other need none."""

    def analyse(self, cur: Cursor, tables: Iterable[str]) -> None:
        for table in tables:
            cur.execute(f"ANALYZE {table}")

    def insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        """INSERT that skips rows whose key is already there."""
        return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                f"({', '.join('?' for _ in columns)}) ON CONFLICT DO NOTHING")

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<dialect {self.name}>"


class Cursor:
    """A driver cursor that takes the seam's `?` placeholders."""

    def __init__(self, cur: Any, dialect: Dialect) -> None:
        self._cur, self.dialect = cur, dialect

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        self._cur.execute(self.dialect.sql(sql), tuple(args))
        return self

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._cur.executemany(self.dialect.sql(sql), [tuple(r) for r in rows])

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cur.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)
