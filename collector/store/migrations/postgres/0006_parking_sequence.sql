-- Parked batches: rejected for a cause an operator can fix (a wrong collector key,
-- an agent not yet registered, residency, the store refusing it...), kept sealed
-- (the payload is encrypted to the collector) until `privtel collector parked
-- replay` runs them through the checks again, or they expire. `id` is the
-- SHA-256 of the payload, so a redelivery parks nothing twice.
CREATE TABLE parked_batches (
    id             text    PRIMARY KEY,
    parked_at      double precision NOT NULL,
    last_parked_at double precision NOT NULL,
    reason         text    NOT NULL,
    detail         text    NOT NULL,
    topic          text    NOT NULL,
    tenant         text,
    agent_id       text,
    batch_id       text,
    seq            bigint,
    size           integer NOT NULL,
    attempts       integer NOT NULL DEFAULT 1,
    payload        bytea   NOT NULL
);
CREATE INDEX parked_batches_parked_at ON parked_batches (parked_at);
CREATE INDEX parked_batches_reason ON parked_batches (reason);

-- The per-agent sequence window, shared by every worker and kept across restarts.
CREATE TABLE agent_sequence (
    agent_id   text    PRIMARY KEY,
    highest    bigint  NOT NULL,
    updated_at double precision NOT NULL
);
-- Which batch used a sequence number (`replayed` vs `duplicate`).
CREATE INDEX batches_agent_seq ON batches (agent_id, seq);
-- A store upgraded to this schema starts the window where its batches left it.
INSERT INTO agent_sequence (agent_id, highest, updated_at)
    SELECT agent_id, MAX(seq), extract(epoch from now()) FROM batches GROUP BY agent_id;
