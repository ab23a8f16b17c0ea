-- Issue 13: the NOC's shared state, so every collector worker (and one restarted)
-- serves the same answer. Holds pseudonymous device ids and agent ids only.
-- noc_agents: when each agent was last heard from (any batch), its last heartbeat
-- and the heartbeat interval that sets its allowed silence.
CREATE TABLE noc_agents (
    tenant       TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    site         TEXT NOT NULL,
    last_seen    REAL NOT NULL,
    heartbeat_ts REAL,
    interval_s   REAL,
    devices      INTEGER,
    PRIMARY KEY (tenant, agent_id)
);
-- noc_devices: the latest value of every exposed field with its poll time (state,
-- JSON), the agent reporting the device and when a heartbeat last listed it.
CREATE TABLE noc_devices (
    tenant     TEXT NOT NULL,
    device     TEXT NOT NULL,
    agent_id   TEXT,
    listed_at  REAL,
    state      TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (tenant, device)
);
CREATE INDEX noc_devices_updated ON noc_devices (updated_at);
-- noc_workers: the collector workers serving /metrics; devices are assigned over
-- the live ones so that each device is exposed by exactly one.
CREATE TABLE noc_workers (
    worker_id TEXT PRIMARY KEY,
    seen_at   REAL NOT NULL
);
