SELECT nextval('public.pg_write_layouts') AS n \gset
INSERT INTO a.events (id, received_at_ms, body, in_pipeline, pipeline_epoch) SELECT 'evt_' || lpad((:n * 16 + g)::text, 14, '0'), :n, repeat('x', 400), true, 1 FROM generate_series(1, 16) g ON CONFLICT (id) DO NOTHING RETURNING id;
BEGIN;
INSERT INTO a.events (id, received_at_ms, body) SELECT 'evt_' || lpad((:n * 16 + g)::text, 14, '0'), :n, repeat('x', 400) FROM generate_series(1, 16) g ON CONFLICT (id) DO UPDATE SET received_at_ms = EXCLUDED.received_at_ms, body = EXCLUDED.body, in_pipeline = false;
INSERT INTO a.jobs (id, subscription_id, created_at_ms, status, expiring, settled_at_ms, body, lease_node, ordered) SELECT 'msg_' || lpad((:n * 16 + g)::text, 14, '0'), 'sub', :n, 'pending', NULL, NULL, repeat('y', 630), 'node1', false FROM generate_series(1, 16) g ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body;
COMMIT;
UPDATE a.jobs SET status = 'delivered', expiring = 'delivered', settled_at_ms = :n, body = repeat('z', 700), lease_node = NULL FROM generate_series(1, 16) g WHERE a.jobs.id = 'msg_' || lpad((:n * 16 + g)::text, 14, '0') AND lease_node = 'node1';
