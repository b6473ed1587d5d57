-- Cluster mode: several nodes on one schema. One of them leads (holds a
-- session advisory lock) and runs the pipeline, windows, outage timers and
-- delivery; every node admits events. Each new leader raises `epoch`; the
-- leader's pipeline and window writes check, in their own transaction, that
-- the epoch is still theirs (`FOR SHARE` on this row), so a node that lost
-- the lead cannot write after another took it: the raise waits for those
-- transactions to end, and every later one fails.
CREATE TABLE leader (
    id       integer PRIMARY KEY CHECK (id = 1),
    epoch    bigint NOT NULL,
    node     text NOT NULL,
    since_ms bigint NOT NULL
);
INSERT INTO leader VALUES (1, 0, '', 0);

-- The epoch of the leader that took an event into its pipeline: the leader
-- sweeps up the unfinished events not taken in its own epoch (admitted by
-- another node, or left by an earlier leader), each once.
ALTER TABLE events ADD COLUMN pipeline_epoch bigint;

-- Every node's heartbeat, for `GET /v1/cluster` and to name the leader's
-- address to a node that is not it.
CREATE TABLE nodes (
    id            text COLLATE "C" PRIMARY KEY,
    address       text NOT NULL,
    started_at_ms bigint NOT NULL,
    seen_at_ms    bigint NOT NULL,
    is_leader     boolean NOT NULL
);

-- Plugins uploaded over the API (`PUT /v1/plugins/{name}`), for every node
-- to install into its own plugins folder; a row without bytes is a deletion.
CREATE TABLE plugins (
    name        text COLLATE "C" NOT NULL,
    candidate   boolean NOT NULL,
    sha256      text,
    bytes       bytea,
    uploaded_at_ms bigint NOT NULL,
    PRIMARY KEY (name, candidate)
);

-- The config-file subscriptions of the running nodes: a node whose file
-- says otherwise refuses to start while another node is alive.
CREATE TABLE agreed_config (
    id            integer PRIMARY KEY CHECK (id = 1),
    subscriptions text NOT NULL,
    node          text NOT NULL,
    at_ms         bigint NOT NULL
);
