SELECT nextval('public.pg_write_layouts') AS n \gset
WITH new AS (INSERT INTO b.events (id, received_at_ms, body) SELECT 'evt_' || lpad((:n * 16 + g)::text, 14, '0'), :n, repeat('x', 400) FROM generate_series(1, 16) g ON CONFLICT (id) DO NOTHING RETURNING id, received_at_ms) INSERT INTO b.inbox (id, received_at_ms, pipeline_epoch) SELECT id, received_at_ms, 1 FROM new RETURNING id;
BEGIN;
DELETE FROM b.inbox WHERE id IN (SELECT 'evt_' || lpad((:n * 16 + g)::text, 14, '0') FROM generate_series(1, 16) g);
INSERT INTO b.jobs (id, subscription_id, created_at_ms, status, expiring, settled_at_ms, body, lease_node, ordered) SELECT 'msg_' || lpad((:n * 16 + g)::text, 14, '0'), 'sub', :n, 'pending', NULL, NULL, repeat('y', 630), 'node1', false FROM generate_series(1, 16) g ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body;
COMMIT;
UPDATE b.jobs SET status = 'delivered', expiring = 'delivered', settled_at_ms = :n, body = repeat('z', 700), lease_node = NULL FROM generate_series(1, 16) g WHERE b.jobs.id = 'msg_' || lpad((:n * 16 + g)::text, 14, '0') AND lease_node = 'node1';
