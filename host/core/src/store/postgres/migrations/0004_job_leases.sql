-- Delivery shared between nodes: any node claims a pending job by writing
-- its id into `lease_node` (`FOR UPDATE SKIP LOCKED`: two nodes never claim
-- the same job) and records the job's states only while the job is still
-- leased to it. A node's leases last while its own `nodes.lease_until_ms`
-- does (renewed with its heartbeat, in the database's clock): one row per
-- node to renew, not one per job. Jobs of a node whose lease ran out are
-- freed (`lease_node` NULL) for the others to claim.
ALTER TABLE jobs ADD COLUMN lease_node text COLLATE "C";
-- Ordered jobs wait in the leader's lanes (their order is kept in one
-- process): they are never claimed, a new leader adopts them.
ALTER TABLE jobs ADD COLUMN ordered boolean NOT NULL DEFAULT false;
CREATE INDEX jobs_claimable ON jobs (id)
    WHERE status = 'pending' AND lease_node IS NULL AND NOT ordered;
CREATE INDEX jobs_by_lease ON jobs (lease_node) WHERE status = 'pending';

ALTER TABLE nodes ADD COLUMN lease_until_ms bigint NOT NULL DEFAULT 0;

-- Jobs stored before this version were delivered by the one leader: they
-- are free now, and ordered ones are marked so.
UPDATE jobs SET ordered = true WHERE status = 'pending' AND body::jsonb ? 'order';
