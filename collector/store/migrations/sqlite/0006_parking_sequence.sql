-- Parked batches: rejected for a cause an operator can fix (a wrong collector key,
-- an agent not yet registered, residency, the store refusing it...), kept sealed
-- (the payload is encrypted to the collector) until `privtel collector parked
-- replay` runs them through the checks again, or they expire. `id` is the
-- SHA-256 of the payload, so a redelivery parks nothing twice.
CREATE TABLE parked_batches (
    id             TEXT    PRIMARY KEY,
    parked_at      REAL    NOT NULL,
    last_parked_at REAL    NOT NULL,
    reason         TEXT    NOT NULL,
    detail         TEXT    NOT NULL,
    topic          TEXT    NOT NULL,
    tenant         TEXT,
    agent_id       TEXT,
    batch_id       TEXT,
    seq            INTEGER,
    size           INTEGER NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 1,
    payload        BLOB    NOT NULL
);
CREATE INDEX parked_batches_parked_at ON parked_batches (parked_at);
CREATE INDEX parked_batches_reason ON parked_batches (reason);

-- The per-agent sequence window, shared by every worker and kept across restarts.
CREATE TABLE agent_sequence (
    agent_id   TEXT    PRIMARY KEY,
    highest    INTEGER NOT NULL,
    updated_at REAL    NOT NULL
);
-- Which batch used a sequence number (`replayed` vs `duplicate`).
CREATE INDEX batches_agent_seq ON batches (agent_id, seq);
-- A store upgraded to this schema starts the window where its batches left it.
INSERT INTO agent_sequence (agent_id, highest, updated_at)
    SELECT agent_id, MAX(seq), CAST(strftime('%s', 'now') AS REAL) FROM batches GROUP BY agent_id;
