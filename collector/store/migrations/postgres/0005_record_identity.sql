-- A record is identified by (tenant, id), here and in every derived table.
-- The partitioned records table cannot hold that unique key (a unique key must
-- contain the partition key, the expiry), and (id, expires_at) let a record in
-- again under another expiry and across tenants. record_keys holds it instead;
-- writers insert into both in one transaction, deletes release the key.
CREATE TABLE record_keys (
    tenant text NOT NULL,
    id     text NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- Copies the old key let in: keep one per (tenant, id), the earliest expiry,
-- hidden if any copy was restricted (when in doubt, hidden).
UPDATE records a SET restricted = true WHERE NOT a.restricted AND EXISTS (
    SELECT 1 FROM records b WHERE b.tenant = a.tenant AND b.id = a.id AND b.restricted);
DELETE FROM records a USING records b WHERE a.tenant = b.tenant AND a.id = b.id
    AND (a.expires_at > b.expires_at OR (a.expires_at IS NULL AND b.expires_at IS NOT NULL));
INSERT INTO record_keys (tenant, id) SELECT tenant, id FROM records;

-- No index on (tenant, id) replaces the old key: lookups by id go through
-- records (tenant, ts, id) (0004), which the search needs anyway, so ingest pays
-- for one index less.
ALTER TABLE records DROP CONSTRAINT records_id_key;

-- Any DELETE of records (DSR erasure, the purge's row deletes) frees the key; a
-- purge that drops a whole partition frees its keys itself (DROP fires nothing).
CREATE FUNCTION record_keys_release() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM record_keys WHERE tenant = OLD.tenant AND id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER records_release_key AFTER DELETE ON records
    FOR EACH ROW EXECUTE FUNCTION record_keys_release();

-- The derived address index, keyed the same way, with the record time so that
-- pruning finds the record through records (tenant, ts, id). It is rebuilt from
-- the records by the index's next refresh (restrictions are re-applied as it goes).
DROP TABLE indexed_records;
CREATE TABLE indexed_records (
    tenant    text             NOT NULL,
    record_id text             NOT NULL,
    ts        double precision NOT NULL,
    PRIMARY KEY (tenant, record_id)
);
DELETE FROM indexed_batches;
DELETE FROM record_addresses;
DROP INDEX api_record_addresses_record;
CREATE INDEX record_addresses_record ON record_addresses (tenant, record_id);
DROP INDEX api_annotations_record;
CREATE INDEX annotations_record ON annotations (tenant, record_id);
