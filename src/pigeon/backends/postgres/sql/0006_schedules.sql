-- pigeon's PostgreSQL schema, version 6: the scheduler's marks.
--
-- Per schedule name, the database time (epoch seconds) up to which every tick has been
-- sent (mark_schedules). A leader reads them when it takes over, so that it neither sends
-- a burst of ticks that were never due (a new schedule starts from when it was first seen)
-- nor misses what its predecessor had not sent. float8, not timestamptz: a mark is stored
-- and returned exactly as given and only compared, never computed with. It is only ever
-- raised, and never expires (one tiny row per schedule: sweep leaves it alone).
CREATE TABLE schedules (
    name text PRIMARY KEY,
    sent_up_to float8 NOT NULL
);
