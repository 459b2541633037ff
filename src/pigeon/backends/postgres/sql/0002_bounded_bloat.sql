-- pigeon's PostgreSQL schema, version 2: storage settings that keep dead tuples bounded.
--
-- Every message row is inserted, updated a few times (lease, extend, retry) and deleted
-- (settle): under sustained load the messages table produces dead tuples as fast as it
-- processes messages, while its live size stays the size of the backlog. The default
-- autovacuum trigger (20% of the table's live rows) is then both too late for a large
-- backlog and too rare for a busy small one; these make autovacuum visit the hot table
-- after a fixed number of dead rows, without cost-based sleeping, so its heap and indexes
-- stop growing once vacuum keeps pace.
--
-- fillfactor 85 leaves room on each page for the new version of a row that is leased,
-- extended or retried, so those updates mostly stay on the row's own page.
ALTER TABLE messages SET (
    fillfactor = 85,
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 5000,
    autovacuum_analyze_scale_factor = 0.0,
    autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);

-- Outcomes, keys and dead letters are deleted in bulk by sweep() when their TTL runs out.
ALTER TABLE results SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE keys SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);
-- Counted join members are deleted one by one as members settle.
ALTER TABLE join_members SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000
);
