-- The derived identifier index beside the address index: every keyed token
-- (`tk-...`: user, e-mail, phone, host, person) and every MAC pseudonym a
-- record holds, in a field or inside text, so a data subject named by any
-- class is one equality lookup. Rows are keyed like record_addresses. The
-- index is rebuilt from the records by the next refresh (restrictions are
-- re-applied as it goes), so records stored before this schema are covered.
CREATE TABLE record_tokens (
    record_id TEXT NOT NULL,
    tenant    TEXT NOT NULL,
    ts        DOUBLE PRECISION NOT NULL,
    token     TEXT COLLATE "C" NOT NULL
);
CREATE INDEX record_tokens_lookup ON record_tokens (tenant, token);
CREATE INDEX record_tokens_record ON record_tokens (tenant, record_id);
DELETE FROM indexed_batches;
DELETE FROM indexed_records;
DELETE FROM record_addresses;
