-- privtel store schema v1 (PostgreSQL). Times are unix seconds (double precision),
-- as in the SQLite backend, so one query layer reads both.
-- The layout is read by the query/DSR API: add columns, never rename or drop.
CREATE TABLE batches (
    agent_id     text             NOT NULL,
    batch_id     text             NOT NULL,
    seq          bigint           NOT NULL,
    tenant       text             NOT NULL,
    created      double precision NOT NULL,
    received_at  double precision NOT NULL,
    record_count integer          NOT NULL,
    PRIMARY KEY (agent_id, batch_id)
);

-- Partitioned by expiry, not by record time: every row of a partition whose
-- upper bound has passed is expired, so the purge drops the partition whole.
-- PostgreSQL cannot enforce a unique key across partitions without the
-- partition key, hence (id, expires_at): a record re-sent in another batch has
-- the same id and the same expiry, so it is still refused.
CREATE TABLE records (
    id              text             NOT NULL,
    agent_id        text             NOT NULL,
    batch_id        text             NOT NULL,
    tenant          text             NOT NULL,
    site            text             NOT NULL,
    device          text             NOT NULL,
    kind            text             NOT NULL,
    name            text             NOT NULL,
    ts              double precision NOT NULL,
    fields          jsonb            NOT NULL,
    retention_class text             NOT NULL,
    legal_basis     text             NOT NULL,
    expires_at      double precision,
    restricted      boolean          NOT NULL DEFAULT false,
    CONSTRAINT records_id_key UNIQUE NULLS NOT DISTINCT (id, expires_at)
) PARTITION BY RANGE (expires_at);

-- Rows without a fixed expiry (kept while the contract lasts). The CHECK lets
-- PostgreSQL add new range partitions without scanning this one.
CREATE TABLE records_noexpiry PARTITION OF records DEFAULT;
ALTER TABLE records_noexpiry ADD CONSTRAINT records_noexpiry_only_null
    CHECK (expires_at IS NULL);

CREATE INDEX records_device_ts ON records (tenant, device, ts);

CREATE TABLE record_partitions (
    name text             PRIMARY KEY,
    lo   double precision NOT NULL,
    hi   double precision NOT NULL
);

CREATE TABLE quarantine (
    id          bigserial        PRIMARY KEY,
    received_at double precision NOT NULL,
    reason      text             NOT NULL,
    topic       text             NOT NULL,
    agent_id    text,
    batch_id    text,
    size        integer          NOT NULL,
    digest      text             NOT NULL
);
CREATE INDEX quarantine_reason ON quarantine (reason);
