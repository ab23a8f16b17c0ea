"""The API's own tables, created idempotently beside the store's.

Why not numbered migrations in `collector/store/migrations/`: the store
requires its files to be numbered 1..n without gaps and counts them to decide
the schema version, so a file numbered 0100 is refused. Until the store
accepts a second numbering range, these tables are created here with
`CREATE ... IF NOT EXISTS`, after `store.migrate()`, under a lock.

Columns only ever get added; every time is unix seconds, like the store.
"""

from __future__ import annotations

from collector.api.db import Db

_LOCK = 0x70726978  # advisory lock key for this DDL (the store uses ...76 and ...77)

_COMMON = [
    """CREATE TABLE IF NOT EXISTS api_users (
        name          TEXT PRIMARY KEY,
        role          TEXT NOT NULL,
        tenants       TEXT NOT NULL,
        token_id      TEXT NOT NULL UNIQUE,
        token_hash    TEXT NOT NULL,
        totp_secret   TEXT,
        totp_last_step BIGINT NOT NULL DEFAULT 0,
        created_at    {real} NOT NULL,
        expires_at    {real},
        revoked_at    {real}
    )""",
    """CREATE TABLE IF NOT EXISTS audit_log (
        seq          BIGINT PRIMARY KEY,
        ts           {real} NOT NULL,
        actor        TEXT NOT NULL,
        role         TEXT NOT NULL,
        action       TEXT NOT NULL,
        tenants      TEXT NOT NULL,
        request_id   TEXT NOT NULL,
        outcome      TEXT NOT NULL,
        result_count BIGINT NOT NULL,
        detail       TEXT NOT NULL,
        prev         TEXT NOT NULL,
        hash         TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS dsr_requests (
        id           TEXT PRIMARY KEY,
        ts           {real} NOT NULL,
        actor        TEXT NOT NULL,
        kind         TEXT NOT NULL,
        tenants      TEXT NOT NULL,
        subject      TEXT NOT NULL,
        since        {real},
        until        {real},
        status       TEXT NOT NULL,
        record_count BIGINT NOT NULL,
        detail       TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS annotations (
        id         TEXT PRIMARY KEY,
        record_id  TEXT NOT NULL,
        tenant     TEXT NOT NULL,
        ts         {real} NOT NULL,
        author     TEXT NOT NULL,
        request_id TEXT NOT NULL,
        note       TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS api_annotations_record ON annotations (record_id)",
    """CREATE TABLE IF NOT EXISTS record_addresses (
        record_id TEXT NOT NULL,
        tenant    TEXT NOT NULL,
        ts        {real} NOT NULL,
        family    INTEGER NOT NULL,
        addr      TEXT {collate} NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS api_record_addresses_lookup ON record_addresses "
    "(tenant, family, addr)",
    "CREATE INDEX IF NOT EXISTS api_record_addresses_record ON record_addresses (record_id)",
    "CREATE TABLE IF NOT EXISTS indexed_records (record_id TEXT PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS indexed_batches (
        agent_id    TEXT NOT NULL,
        batch_id    TEXT NOT NULL,
        received_at {real} NOT NULL,
        PRIMARY KEY (agent_id, batch_id)
    )""",
    # On the store's tables: search order, and the index following new batches.
    "CREATE INDEX IF NOT EXISTS api_records_tenant_ts ON records (tenant, ts, id)",
    "CREATE INDEX IF NOT EXISTS api_records_batch ON records (agent_id, batch_id)",
    "CREATE INDEX IF NOT EXISTS api_batches_received ON batches (received_at)",
]


def ensure_schema(db: Db) -> None:
    """Create the API tables if missing. The store's own tables must exist
    (`store.migrate()` first): the index on `records` is ours, the table is not."""
    pg = db.dialect == "postgres"
    real = "DOUBLE PRECISION" if pg else "REAL"
    collate = 'COLLATE "C"' if pg else ""
    with db.tx(write=True) as cur:
        if pg:
            cur.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
        for stmt in _COMMON:
            cur.execute(stmt.format(real=real, collate=collate))


TABLES = ("api_users", "audit_log", "dsr_requests", "annotations", "record_addresses",
          "indexed_records", "indexed_batches")


def open_api_db(url: str, *, migrate: bool = True) -> Db:
    """A `Db` on the store at `url` with the store's schema and ours in place:
    what the CLI commands (users, audit) start from."""
    from collector.store import open_store

    if migrate:
        store = open_store(url)
        try:
            store.migrate()
        finally:
            store.close()
    db = Db(url)
    try:
        ensure_schema(db)
    except BaseException:
        db.close()
        raise
    return db
