-- hookhost's tables, version 1. Records are JSON text as the core
-- serialises them; the columns beside them are what the queries select,
-- order and expire by. Ids sort bytewise (COLLATE "C"), as in sled.

CREATE TABLE events (
    id             text COLLATE "C" PRIMARY KEY,
    received_at_ms bigint NOT NULL,
    body           text NOT NULL
);
-- Retention removes events by arrival.
CREATE INDEX events_by_arrival ON events (received_at_ms);

CREATE TABLE jobs (
    id              text COLLATE "C" PRIMARY KEY,
    subscription_id text COLLATE "C" NOT NULL,
    created_at_ms   bigint NOT NULL,
    status          text NOT NULL,
    -- Which retention period applies ('delivered', 'dead_letters') and
    -- since when; NULL while the job is still to send.
    expiring        text,
    settled_at_ms   bigint,
    body            text NOT NULL
);
CREATE INDEX jobs_pending ON jobs (id) WHERE status = 'pending';
CREATE INDEX jobs_dead ON jobs (id) WHERE status = 'dead';
CREATE INDEX jobs_paused ON jobs (subscription_id) WHERE status = 'paused';
-- Listings, newest first, of all jobs and of one subscription's.
CREATE INDEX jobs_by_creation ON jobs (created_at_ms, id);
CREATE INDEX jobs_by_subscription ON jobs (subscription_id, created_at_ms, id);
CREATE INDEX jobs_expiring ON jobs (expiring, settled_at_ms) WHERE expiring IS NOT NULL;

-- Events waiting in aggregation windows, in closing order.
CREATE TABLE window_members (
    window_end_ms bigint NOT NULL,
    group_hash    text COLLATE "C" NOT NULL,
    event_id      text COLLATE "C" NOT NULL,
    body          text NOT NULL,
    PRIMARY KEY (window_end_ms, group_hash, event_id)
);

-- Each location's connection state; timer_ms: when its outage is
-- confirmed (NULL: no timer running).
CREATE TABLE outages (
    location text COLLATE "C" PRIMARY KEY,
    timer_ms bigint,
    body     text NOT NULL
);
CREATE INDEX outages_due ON outages (timer_ms) WHERE timer_ms IS NOT NULL;

CREATE TABLE subscriptions (
    id   text COLLATE "C" PRIMARY KEY,
    body text NOT NULL
);

CREATE TABLE endpoint_health (
    subscription_id text COLLATE "C" PRIMARY KEY,
    body            text NOT NULL
);

CREATE TABLE idempotency (
    key   text COLLATE "C" PRIMARY KEY,
    at_ms bigint NOT NULL,
    body  text NOT NULL
);
CREATE INDEX idempotency_by_age ON idempotency (at_ms);

-- Single values: `closed_through` (windows closed up to this time).
CREATE TABLE markers (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);
