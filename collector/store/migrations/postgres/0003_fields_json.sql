-- fields: json instead of jsonb. The map is written once per record and read back
-- whole; jsonb's parse-and-rebuild on every insert cost about a third of the COPY
-- throughput (measured with bench/ingest.py) and nothing queries inside it.
ALTER TABLE records ALTER COLUMN fields TYPE json USING fields::json;
