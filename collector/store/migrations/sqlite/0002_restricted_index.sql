-- Kept in step with the PostgreSQL schema: restricted rows found without a scan.
CREATE INDEX records_restricted ON records (id) WHERE restricted = 1;
