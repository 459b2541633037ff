-- pigeon's PostgreSQL schema, version 8: paused queues.
--
-- One row per paused queue (Backend.pause). The fetch (`lease` in queries.sql) skips a
-- queue whose row is live: until NULL (until resumed) or later than now(). A row whose until
-- has passed counts as none: a new pause of its queue replaces it and starts afresh.
CREATE TABLE pauses (
    queue text PRIMARY KEY,
    reason text,
    since timestamptz NOT NULL,
    until timestamptz
);
