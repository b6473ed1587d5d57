-- A standby places its events' window members itself. Closing windows
-- locks the `closed_through` row before reading the due members, and a
-- standby storing members reads it under a share lock, keeping only
-- members of windows ending after it: so the row must exist before the
-- first window closes.
INSERT INTO markers (name, value) VALUES ('closed_through', 0)
ON CONFLICT (name) DO NOTHING;
