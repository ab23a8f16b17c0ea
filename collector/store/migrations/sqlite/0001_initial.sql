-- privtel store schema v1 (SQLite). Times are unix seconds (REAL).
-- The layout is read by the query/DSR API: add columns, never rename or drop.
CREATE TABLE batches (
    agent_id     TEXT    NOT NULL,
    batch_id     TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    tenant       TEXT    NOT NULL,
    created      REAL    NOT NULL,
    received_at  REAL    NOT NULL,
    record_count INTEGER NOT NULL,
    PRIMARY KEY (agent_id, batch_id)
);

CREATE TABLE records (
    id              TEXT    PRIMARY KEY,
    agent_id        TEXT    NOT NULL,
    batch_id        TEXT    NOT NULL,
    tenant          TEXT    NOT NULL,
    site            TEXT    NOT NULL,
    device          TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    ts              REAL    NOT NULL,
    fields          TEXT    NOT NULL CHECK (json_valid(fields)),
    retention_class TEXT    NOT NULL,
    legal_basis     TEXT    NOT NULL,
    expires_at      REAL,
    restricted      INTEGER NOT NULL DEFAULT 0 CHECK (restricted IN (0, 1))
);
CREATE INDEX records_expires_at ON records (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX records_device_ts ON records (tenant, device, ts);

CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL    NOT NULL,
    reason      TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    agent_id    TEXT,
    batch_id    TEXT,
    size        INTEGER NOT NULL,
    digest      TEXT    NOT NULL
);
CREATE INDEX quarantine_reason ON quarantine (reason);
