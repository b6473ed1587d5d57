-- Tables of hookhost's events and jobs as the migrations make them (a), and
-- with an inbox of ids marking the events in the pipeline (b).
DROP SCHEMA IF EXISTS a CASCADE; DROP SCHEMA IF EXISTS b CASCADE;
CREATE SCHEMA a; CREATE SCHEMA b;
CREATE SEQUENCE IF NOT EXISTS public.pg_write_layouts;
-- a: today's layout
CREATE TABLE a.events (id text COLLATE "C" PRIMARY KEY, received_at_ms bigint NOT NULL, body text NOT NULL,
  in_pipeline boolean NOT NULL DEFAULT false, pipeline_epoch bigint, pipeline_node text COLLATE "C");
CREATE INDEX ON a.events (received_at_ms);
CREATE INDEX ON a.events (received_at_ms, id) WHERE in_pipeline;
CREATE TABLE a.jobs (id text COLLATE "C" PRIMARY KEY, subscription_id text COLLATE "C" NOT NULL, created_at_ms bigint NOT NULL,
  status text NOT NULL, expiring text, settled_at_ms bigint, body text NOT NULL, lease_node text COLLATE "C", ordered boolean NOT NULL DEFAULT false);
CREATE INDEX ON a.jobs (id) WHERE status = 'pending';
CREATE INDEX ON a.jobs (id) WHERE status = 'dead';
CREATE INDEX ON a.jobs (subscription_id) WHERE status = 'paused';
CREATE INDEX ON a.jobs (created_at_ms, id);
CREATE INDEX ON a.jobs (subscription_id, created_at_ms, id);
CREATE INDEX ON a.jobs (expiring, settled_at_ms) WHERE expiring IS NOT NULL;
CREATE INDEX ON a.jobs (id) WHERE status = 'pending' AND lease_node IS NULL AND NOT ordered;
CREATE INDEX ON a.jobs (lease_node) WHERE status = 'pending';
-- b: events written once (an inbox of ids marks the pipeline's), same jobs
CREATE TABLE b.events (id text COLLATE "C" PRIMARY KEY, received_at_ms bigint NOT NULL, body text NOT NULL);
CREATE INDEX ON b.events (received_at_ms);
CREATE TABLE b.inbox (id text COLLATE "C" PRIMARY KEY, received_at_ms bigint NOT NULL, pipeline_epoch bigint, pipeline_node text COLLATE "C");
CREATE INDEX ON b.inbox (received_at_ms, id);
CREATE TABLE b.jobs (LIKE a.jobs INCLUDING ALL);
