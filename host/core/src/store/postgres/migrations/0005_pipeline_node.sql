-- Every node runs the pipeline of the events it admits. A standby marks
-- them with its id: the leader's sweep leaves them alone while that node's
-- lease lasts. A standby writes an outcome only for its own events that no
-- leader took meanwhile, and only one that touches no window, outage or
-- ordering state; the others it hands to the leader (`pipeline_node` back
-- to NULL). Events of a node whose lease ran out are the leader's again.
ALTER TABLE events ADD COLUMN pipeline_node text COLLATE "C";
