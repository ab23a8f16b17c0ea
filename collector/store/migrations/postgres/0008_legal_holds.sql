-- Legal holds (collector/holds.py) and offboarded tenants (collector/offboard.py).
-- `records.held` is set by the hold sweep on every record an active hold covers;
-- the purge (row deletes and partition drops) and erasure skip such rows, as they
-- skip restricted ones. Release clears the flag and sweeps again with the holds
-- still in force. A constant default adds the column without rewriting partitions.
ALTER TABLE records ADD COLUMN held boolean NOT NULL DEFAULT false;
CREATE INDEX records_held ON records (tenant, id) WHERE held;
CREATE TABLE legal_holds (
    id             text PRIMARY KEY,
    tenant         text NOT NULL,
    subject        text,
    since          double precision,
    until          double precision,
    reason         text NOT NULL,
    actor          text NOT NULL,
    created_at     double precision NOT NULL,
    released_at    double precision,
    released_by    text,
    release_reason text
);
CREATE INDEX legal_holds_tenant ON legal_holds (tenant);
CREATE TABLE offboarded_tenants (
    tenant        text PRIMARY KEY,
    ts            double precision NOT NULL,
    actor         text NOT NULL,
    reason        text NOT NULL,
    report_digest text NOT NULL
);
