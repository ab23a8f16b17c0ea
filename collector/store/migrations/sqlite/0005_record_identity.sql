-- A record is identified by (tenant, id), here and in every derived table: with
-- `id` alone as the key, one tenant's record could keep another tenant's record
-- with the same id out. SQLite cannot change a primary key in place, so the
-- table is rebuilt (its indexes with it).
CREATE TABLE records_v5 (
    id              TEXT    NOT NULL,
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
    restricted      INTEGER NOT NULL DEFAULT 0 CHECK (restricted IN (0, 1)),
    PRIMARY KEY (tenant, id)
);
INSERT INTO records_v5 (id, agent_id, batch_id, tenant, site, device, kind, name, ts, fields,
                        retention_class, legal_basis, expires_at, restricted)
    SELECT id, agent_id, batch_id, tenant, site, device, kind, name, ts, fields,
           retention_class, legal_basis, expires_at, restricted FROM records;
DROP TABLE records;
ALTER TABLE records_v5 RENAME TO records;
CREATE INDEX records_expires_at ON records (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX records_device_ts ON records (tenant, device, ts);
CREATE INDEX records_restricted ON records (id) WHERE restricted = 1;
CREATE INDEX api_records_tenant_ts ON records (tenant, ts, id);
CREATE INDEX api_records_batch ON records (agent_id, batch_id);

-- The derived address index, keyed the same way, with the record time so that
-- pruning finds the record through records (tenant, ts, id). It is rebuilt from
-- the records by the index's next refresh (restrictions are re-applied as it goes).
DROP TABLE indexed_records;
CREATE TABLE indexed_records (
    tenant    TEXT NOT NULL,
    record_id TEXT NOT NULL,
    ts        REAL NOT NULL,
    PRIMARY KEY (tenant, record_id)
);
DELETE FROM indexed_batches;
DELETE FROM record_addresses;
DROP INDEX api_record_addresses_record;
CREATE INDEX record_addresses_record ON record_addresses (tenant, record_id);
DROP INDEX api_annotations_record;
CREATE INDEX annotations_record ON annotations (tenant, record_id);
