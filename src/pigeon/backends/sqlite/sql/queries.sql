-- The statements of pigeon's SQLite backend, one per "-- name:" section.
--
-- Loaded once (see store.py). Parameters named ?N are bound by position, the others (?) in
-- order. "ids" parameters are JSON arrays given as text and read with json_each, so that each
-- statement is prepared once and reused whatever the batch size. Times are epoch seconds by
-- SQLite's own clock (the "now" statement), read by the caller and bound as a parameter.


-- name: now
-- Seconds since the epoch by SQLite's clock (millisecond resolution). julianday() is a day
-- count in a double (~40 µs granularity at today's dates): round to SQLite's own millisecond
-- resolution so equal instants compare equal.
SELECT round((julianday('now') - 2440587.5) * 86400000.0) / 1000.0


-- name: last_rowid
SELECT last_insert_rowid()


-- Enqueueing -------------------------------------------------------------------------------

-- name: existing
-- The ids among ?1 already stored as a message, an outcome or a dead letter.
SELECT id FROM messages WHERE id IN (SELECT value FROM json_each(?1))
UNION ALL SELECT id FROM results WHERE id IN (SELECT value FROM json_each(?1))
UNION ALL SELECT id FROM dead WHERE id IN (SELECT value FROM json_each(?1))


-- name: held_keys
-- The unexpired keys among ?1 and the id of the message holding each.
SELECT key, id FROM keys WHERE key IN (SELECT value FROM json_each(?1)) AND expires_at > ?2


-- name: result_states
SELECT id, state FROM results WHERE id IN (SELECT value FROM json_each(?1))


-- name: insert_message
INSERT INTO messages (id, queue, task, priority, due, state, max_deliveries, lease_len, key,
                      expires_at, result_ttl, after, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)


-- name: insert_key
INSERT OR REPLACE INTO keys (key, id, expires_at) VALUES (?, ?, ?)


-- name: insert_join
INSERT OR REPLACE INTO joins (id, mode, total, settled, succeeded, fired) VALUES (?, ?, ?, ?, ?, ?)


-- name: insert_member
INSERT INTO join_members (member, join_id) VALUES (?, ?)


-- Fetching ---------------------------------------------------------------------------------

-- name: take_poison
-- Leases that ran out on the last delivery allowed: the message is poison.
DELETE FROM messages
WHERE state = 'leased' AND lease_until <= ?1 AND expiries + 1 >= max_deliveries
RETURNING id, queue, task, result_ttl, expiries + 1, body


-- name: reclaim_lapsed
-- The other leases that ran out: due again.
UPDATE messages SET state = 'pending', expiries = expiries + 1, due = lease_until, worker = NULL
WHERE state = 'leased' AND lease_until <= ?1


-- name: take_expired
DELETE FROM messages WHERE state = 'pending' AND expires_at <= ?1 AND due <= ?1
RETURNING id, queue, task, result_ttl, body


-- name: priorities
-- The priorities a queue has pending messages at, highest first, by index seeks only. Leasing
-- then seeks (queue, priority, due <= now) per priority, so scheduled messages (due later)
-- are never walked over, however many there are. None while the queue is paused at ?2 (one
-- primary-key probe of the small pauses table).
WITH RECURSIVE level(priority) AS (
    SELECT max(priority) FROM messages WHERE queue = ?1 AND state = 'pending'
      AND NOT EXISTS (SELECT 1 FROM pauses WHERE queue = ?1 AND coalesce(until > ?2, 1))
    UNION ALL
    SELECT (SELECT max(priority) FROM messages
            WHERE queue = ?1 AND state = 'pending' AND priority < level.priority)
    FROM level WHERE level.priority IS NOT NULL)
SELECT priority FROM level WHERE priority IS NOT NULL


-- name: lease
-- Lease up to ?6 due messages of queue ?4 at priority ?5 to worker ?1 (for ?3 seconds, or
-- each message's own lease when NULL). RETURNING order is unspecified: the caller sorts.
UPDATE messages
SET state = 'leased', attempt = attempt + 1, worker = ?1,
    lease_until = ?2 + coalesce(?3, lease_len)
WHERE rowid IN (
    SELECT rowid FROM messages
    WHERE queue = ?4 AND state = 'pending' AND priority = ?5 AND due <= ?2
    ORDER BY due, id
    LIMIT ?6)
RETURNING due, id, attempt, failures, body, coalesce(?3, lease_len)


-- name: due_at
SELECT 1 FROM messages WHERE queue = ?1 AND state = 'pending' AND priority = ?2 AND due <= ?3


-- name: lapsed
SELECT 1 FROM messages WHERE state = 'leased' AND lease_until <= ?1


-- Held deliveries --------------------------------------------------------------------------
-- Given as a JSON array of [id, attempt(, retry_in)]; a statement touches a message only
-- while it is leased as that attempt.

-- name: extend
UPDATE messages SET lease_until = ?1 + lease_len FROM json_each(?2) AS j
WHERE messages.id = json_extract(j.value, '$[0]')
  AND messages.attempt = json_extract(j.value, '$[1]')
  AND messages.state = 'leased'
RETURNING messages.id, messages.attempt


-- name: release
UPDATE messages SET state = 'pending', due = ?1, worker = NULL FROM json_each(?2) AS j
WHERE messages.id = json_extract(j.value, '$[0]')
  AND messages.attempt = json_extract(j.value, '$[1]')
  AND messages.state = 'leased'
RETURNING messages.id


-- name: retry
UPDATE messages
SET state = 'pending', failures = failures + 1, worker = NULL,
    due = ?1 + json_extract(j.value, '$[2]')
FROM json_each(?2) AS j
WHERE messages.id = json_extract(j.value, '$[0]')
  AND messages.attempt = json_extract(j.value, '$[1]')
  AND messages.state = 'leased'
RETURNING messages.id, messages.attempt


-- name: take_held
DELETE FROM messages WHERE rowid IN (
    SELECT messages.rowid FROM json_each(?1) AS j JOIN messages
    ON messages.id = json_extract(j.value, '$[0]')
    WHERE messages.attempt = json_extract(j.value, '$[1]') AND messages.state = 'leased')
RETURNING id, attempt, queue, task, body


-- Finishing messages: store outcomes, release followers, count join members ---------------

-- name: release_followers
UPDATE messages SET state = 'pending'
WHERE state = 'waiting' AND after IN (SELECT value FROM json_each(?1))
RETURNING after


-- name: take_memberships
DELETE FROM join_members WHERE member IN (SELECT value FROM json_each(?1))
RETURNING join_id, member


-- name: count_join
UPDATE joins SET settled = settled + ?1, succeeded = succeeded + ?2 WHERE id = ?3 AND fired = 0
RETURNING mode, total, settled, succeeded


-- name: fire_join
UPDATE joins SET fired = 1 WHERE id = ?1


-- name: wake_join
UPDATE messages SET state = 'pending' WHERE id = ?1 AND state = 'waiting'


-- name: store_result
-- The first stored outcome of an id wins.
INSERT OR IGNORE INTO results (id, state, expires_at, body) VALUES (?, ?, ?, ?)


-- name: store_history
INSERT OR IGNORE INTO history (id, queue, task, state, error, expires_at)
VALUES (?, ?, ?, ?, ?, ?)


-- name: store_dead
INSERT OR REPLACE INTO dead (id, queue, task, reason, died_at, expires_at, body)
VALUES (?, ?, ?, ?, ?, ?, ?)


-- Results and control ----------------------------------------------------------------------

-- name: results
SELECT body FROM results WHERE id IN (SELECT value FROM json_each(?1)) AND expires_at > ?2


-- name: take_cancellable
DELETE FROM messages
WHERE id IN (SELECT value FROM json_each(?1)) AND state IN ('waiting', 'pending')
RETURNING id, queue, task, result_ttl, body


-- name: flag_cancel
UPDATE messages SET cancel_requested = 1
WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'leased'


-- name: cancelling
SELECT messages.id, messages.attempt FROM json_each(?1) AS j JOIN messages
ON messages.id = json_extract(j.value, '$[0]')
WHERE messages.attempt = json_extract(j.value, '$[1]') AND messages.state = 'leased'
  AND messages.cancel_requested = 1


-- name: dead_letters
SELECT id, queue, task, reason, died_at, body FROM dead
WHERE ?1 IS NULL OR queue = ?1 ORDER BY died_at, id LIMIT ?2


-- name: take_dead
DELETE FROM dead WHERE id IN (SELECT value FROM json_each(?1)) RETURNING id, queue, task, body


-- name: forget_results
DELETE FROM results WHERE id IN (SELECT value FROM json_each(?1))


-- name: forget_history
DELETE FROM history WHERE id IN (SELECT value FROM json_each(?1))


-- name: requeue_message
-- insert_message, but a message stored again meanwhile under the same id is left alone.
INSERT OR IGNORE INTO messages (id, queue, task, priority, due, state, max_deliveries,
                                lease_len, key, expires_at, result_ttl, after, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)


-- name: purge_dead
DELETE FROM dead WHERE id IN (SELECT value FROM json_each(?1))


-- name: purge_all_dead
DELETE FROM dead


-- name: purge
DELETE FROM messages WHERE queue = ?1 AND state IN ('waiting', 'pending')


-- name: inspect_message
SELECT state, queue, task, attempt, failures, due, lease_until, worker, body, cancel_requested
FROM messages WHERE id = ?1


-- name: inspect_result
SELECT body FROM results WHERE id = ?1 AND expires_at > ?2


-- name: inspect_dead
SELECT queue, task, reason, body FROM dead WHERE id = ?1


-- name: count_messages
SELECT queue, state, due > ?1, count(*) FROM messages GROUP BY 1, 2, 3


-- name: count_dead
SELECT queue, count(*) FROM dead GROUP BY queue


-- name: count_results
SELECT count(*) FROM results WHERE expires_at > ?1


-- name: live_workers
SELECT info FROM workers WHERE expires_at > ?1 ORDER BY id


-- name: heartbeat
INSERT OR REPLACE INTO workers (id, expires_at, info) VALUES (?1, ?2, ?3)


-- name: retire
DELETE FROM workers WHERE id = ?1


-- Sweeping ---------------------------------------------------------------------------------
-- Each sweep_* statement deletes at most ?2 (SWEEP_CHUNK) expired rows of one table, so that
-- a sweep never holds the write lock long; the caller repeats it until fewer come back.

-- name: sweep_results
DELETE FROM results WHERE rowid IN (SELECT rowid FROM results WHERE expires_at <= ?1 LIMIT ?2)


-- name: sweep_history
DELETE FROM history WHERE id IN (SELECT id FROM history WHERE expires_at <= ?1 LIMIT ?2)


-- name: sweep_keys
DELETE FROM keys WHERE rowid IN (SELECT rowid FROM keys WHERE expires_at <= ?1 LIMIT ?2)


-- name: sweep_dead
DELETE FROM dead WHERE rowid IN (SELECT rowid FROM dead WHERE expires_at <= ?1 LIMIT ?2)


-- name: sweep_workers
DELETE FROM workers WHERE rowid IN (SELECT rowid FROM workers WHERE expires_at <= ?1 LIMIT ?2)


-- name: sweep_locks
DELETE FROM locks WHERE rowid IN (SELECT rowid FROM locks WHERE expires_at <= ?1 LIMIT ?2)


-- name: sweep_buckets
-- A bucket whose tat has passed is the same as an absent one.
DELETE FROM buckets WHERE rowid IN (SELECT rowid FROM buckets WHERE tat <= ?1 LIMIT ?2)


-- name: sweep_slots
DELETE FROM slots WHERE rowid IN (SELECT rowid FROM slots WHERE expires_at <= ?1 LIMIT ?2)


-- name: sweep_progress
DELETE FROM progress WHERE rowid IN (SELECT rowid FROM progress WHERE expires_at <= ?1 LIMIT ?2)


-- name: sweep_joins
DELETE FROM joins WHERE id NOT IN (SELECT id FROM messages)


-- name: sweep_members
DELETE FROM join_members WHERE join_id NOT IN (SELECT id FROM joins)


-- Coordination -----------------------------------------------------------------------------

-- name: lock
-- Take or renew: the row changes (and comes back) only if the lock is free, lapsed or ours.
INSERT INTO locks (name, owner, expires_at) VALUES (?1, ?2, ?3 + ?4)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE locks.owner = excluded.owner OR locks.expires_at <= ?3
RETURNING owner


-- name: lock_held_by_other
SELECT 1 FROM locks WHERE name = ?1 AND owner != ?2 AND expires_at > ?3


-- name: unlock
DELETE FROM locks WHERE name = ?1 AND owner = ?2


-- name: schedules
-- The marks of the schedules named (a JSON array).
SELECT name, sent_up_to FROM schedules WHERE name IN (SELECT value FROM json_each(?1))


-- name: mark_schedules
-- Raise the marks given (a JSON object name -> mark): a mark never moves back. (WHERE true:
-- an upsert from a SELECT needs a WHERE, or SQLite reads ON as a join's.)
INSERT INTO schedules (name, sent_up_to) SELECT key, value FROM json_each(?1) WHERE true
ON CONFLICT (name) DO UPDATE SET sent_up_to = max(sent_up_to, excluded.sent_up_to)


-- name: buckets
-- Rate limits: the tats of the buckets named (a JSON array); set_bucket stores the new ones.
SELECT bucket, tat FROM buckets WHERE bucket IN (SELECT value FROM json_each(?1))


-- name: set_bucket
INSERT INTO buckets (bucket, tat) VALUES (?1, ?2)
ON CONFLICT (bucket) DO UPDATE SET tat = excluded.tat


-- name: acquire
-- Concurrency limits: the holder keeps (renews) its unexpired place, or gets one while fewer
-- than the limit (?5) are held; the row comes back iff the holder has a place after.
INSERT INTO slots (name, holder, expires_at)
SELECT ?1, ?2, ?3 + ?4
WHERE EXISTS (SELECT 1 FROM slots WHERE name = ?1 AND holder = ?2 AND expires_at > ?3)
   OR (SELECT count(*) FROM slots WHERE name = ?1 AND expires_at > ?3) < ?5
ON CONFLICT (name, holder) DO UPDATE SET expires_at = excluded.expires_at
RETURNING holder


-- name: release_slots
-- Places given as a JSON array of [name, holder].
DELETE FROM slots WHERE (name, holder) IN (
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1))


-- Progress and events ----------------------------------------------------------------------

-- name: report
INSERT OR REPLACE INTO progress (id, expires_at, body) VALUES (?, ?, ?)


-- name: progress
SELECT body FROM progress WHERE id IN (SELECT value FROM json_each(?1)) AND expires_at > ?2


-- name: publish
INSERT INTO events (body) VALUES (?)


-- name: last_event
SELECT coalesce(max(seq), 0) FROM events


-- name: prune_events
DELETE FROM events WHERE seq <= ?1


-- name: read_events
SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2


-- Paused queues ----------------------------------------------------------------------------
-- A pause is live while its until is NULL or later than now; one that has passed counts as
-- none, and a new pause of its queue starts afresh (a new since).

-- name: pause
-- Pause queue ?1 with reason ?2 until ?4 (NULL: until resumed) at now ?3, keeping the since
-- of a live pause.
INSERT INTO pauses (queue, reason, since, until) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (queue) DO UPDATE SET
    reason = excluded.reason,
    until = excluded.until,
    since = CASE WHEN coalesce(pauses.until > excluded.since, 1) THEN pauses.since
                 ELSE excluded.since END
RETURNING queue, reason, since, until


-- name: resume
-- Whether the pause deleted was live at ?2 (no row: the queue was not paused).
DELETE FROM pauses WHERE queue = ?1 RETURNING coalesce(until > ?2, 1)


-- name: paused
SELECT queue, reason, since, until FROM pauses WHERE coalesce(until > ?1, 1) ORDER BY queue


-- Listing (list_messages) --------------------------------------------------------------------
-- Each walks one index down from ?2 (exclusive) to ?1 (inclusive), at most ?3 entries.

-- name: list_live
SELECT id, state, queue, task, due FROM messages
WHERE id >= ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3


-- name: list_history
SELECT id, state, queue, task, error, expires_at FROM history
WHERE id >= ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3


-- name: list_history_queue
SELECT id, state, queue, task, error, expires_at FROM history
WHERE queue = ?4 AND id >= ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3


-- name: list_history_task
SELECT id, state, queue, task, error, expires_at FROM history
WHERE task = ?4 AND id >= ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3


-- name: list_dead
SELECT id, queue, task, reason, expires_at FROM dead
WHERE id >= ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3


-- name: key_id
SELECT id FROM keys WHERE key = ?1 AND expires_at > ?2
