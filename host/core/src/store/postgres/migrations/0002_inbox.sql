-- Durable ingest on PostgreSQL: an accepted event is a row of `events`
-- committed before its 202, flagged `in_pipeline` until the pipeline's
-- outcome is stored (that write clears the flag in the same transaction).
-- The primary key makes an event id accepted once, whichever node took it.
ALTER TABLE events ADD COLUMN in_pipeline boolean NOT NULL DEFAULT false;
-- Events still to run through the pipeline, oldest first (at start).
CREATE INDEX events_in_pipeline ON events (received_at_ms, id) WHERE in_pipeline;
