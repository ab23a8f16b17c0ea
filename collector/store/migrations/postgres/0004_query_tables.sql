-- The query side's tables (users and tokens, audit log, DSR requests and
-- annotations, the derived address index) and its indexes on the store's tables.
-- Until schema 4 `collector/api/schema.py` created these with IF NOT EXISTS beside
-- the numbered migrations; IF NOT EXISTS stays so a store it set up upgrades.
CREATE TABLE IF NOT EXISTS api_users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    tenants       TEXT NOT NULL,
    token_id      TEXT NOT NULL UNIQUE,
    token_hash    TEXT NOT NULL,
    totp_secret   TEXT,
    totp_last_step BIGINT NOT NULL DEFAULT 0,
    created_at    DOUBLE PRECISION NOT NULL,
    expires_at    DOUBLE PRECISION,
    revoked_at    DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq          BIGINT PRIMARY KEY,
    ts           DOUBLE PRECISION NOT NULL,
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
);
CREATE TABLE IF NOT EXISTS dsr_requests (
    id           TEXT PRIMARY KEY,
    ts           DOUBLE PRECISION NOT NULL,
    actor        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    tenants      TEXT NOT NULL,
    subject      TEXT NOT NULL,
    since        DOUBLE PRECISION,
    until        DOUBLE PRECISION,
    status       TEXT NOT NULL,
    record_count BIGINT NOT NULL,
    detail       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS annotations (
    id         TEXT PRIMARY KEY,
    record_id  TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    ts         DOUBLE PRECISION NOT NULL,
    author     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    note       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_annotations_record ON annotations (record_id);
CREATE TABLE IF NOT EXISTS record_addresses (
    record_id TEXT NOT NULL,
    tenant    TEXT NOT NULL,
    ts        DOUBLE PRECISION NOT NULL,
    family    INTEGER NOT NULL,
    addr      TEXT COLLATE "C" NOT NULL
);
CREATE INDEX IF NOT EXISTS api_record_addresses_lookup ON record_addresses (tenant, family, addr);
CREATE INDEX IF NOT EXISTS api_record_addresses_record ON record_addresses (record_id);
CREATE TABLE IF NOT EXISTS indexed_records (record_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS indexed_batches (
    agent_id    TEXT NOT NULL,
    batch_id    TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (agent_id, batch_id)
);
CREATE INDEX IF NOT EXISTS api_records_tenant_ts ON records (tenant, ts, id);
CREATE INDEX IF NOT EXISTS api_records_batch ON records (agent_id, batch_id);
CREATE INDEX IF NOT EXISTS api_batches_received ON batches (received_at);
