-- Legal holds (collector/holds.py) and offboarded tenants (collector/offboard.py).
-- `records.held` is set by the hold sweep on every record an active hold covers;
-- the purge and erasure skip such rows, as they skip restricted ones. Release
-- clears the flag and sweeps again with the holds still in force.
ALTER TABLE records ADD COLUMN held INTEGER NOT NULL DEFAULT 0 CHECK (held IN (0, 1));
CREATE INDEX records_held ON records (tenant, id) WHERE held = 1;
CREATE TABLE legal_holds (
    id             TEXT PRIMARY KEY,
    tenant         TEXT NOT NULL,
    subject        TEXT,
    since          REAL,
    until          REAL,
    reason         TEXT NOT NULL,
    actor          TEXT NOT NULL,
    created_at     REAL NOT NULL,
    released_at    REAL,
    released_by    TEXT,
    release_reason TEXT
);
CREATE INDEX legal_holds_tenant ON legal_holds (tenant);
CREATE TABLE offboarded_tenants (
    tenant        TEXT PRIMARY KEY,
    ts            REAL NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    report_digest TEXT NOT NULL
);
