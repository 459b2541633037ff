-- The statements of pigeon's PostgreSQL backend, one per "-- name:" section.
--
-- Loaded once; __schema__ is replaced by pigeon's schema (quoted), __work__ and __done__ by
-- the names of its two notification channels. Every statement that may be repeated is run
-- as a prepared statement, and every batch travels as arrays ($n::text[] ...) so that each
-- statement is prepared once whatever the batch size. now() is the database clock.
--
-- Notifications (delivered when the transaction commits):
--   __work__  payload: a queue name; something in that queue became due
--   __done__  payload: comma-separated message ids that now have an outcome, or "*" (check
--             every id: the list was too long for one notification)
--   __events__ payload: the seq of the newest event published (publish)


-- name: clock
SELECT extract(epoch FROM clock_timestamp())::float8


-- name: insert_messages
-- Store new messages (an id already stored as a message, an outcome or a dead letter is
-- skipped), the counters of the joins among them, and wake the fetchers of their queues.
-- $1-$14 and $23: one array element per message; $15-$20: one per join message; $21-$22:
-- one per (join, unsettled member). A relative expiry ($23, like delay) is resolved by now():
-- the earlier of it and the absolute expires_at (least ignores a NULL).
WITH input AS (
    SELECT *
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::float8[], $6::float8[],
                $7::text[], $8::int[], $9::float8[], $10::text[], $11::float8[], $12::float8[],
                $13::text[], $14::bytea[], $23::float8[])
        AS t(id, queue, task, priority, delay, run_at, state, max_deliveries, lease_len, key,
             expires_at, result_ttl, after, body, expires)
),
inserted AS (
    INSERT INTO __schema__.messages AS m
        (id, queue, task, priority, due, state, max_deliveries, lease_len, key, expires_at,
         result_ttl, after, body)
    SELECT i.id, i.queue, i.task, least(greatest(i.priority, 0), 9),
           greatest(now() + make_interval(secs => i.delay),
                    coalesce(to_timestamp(i.run_at), '-infinity')),
           i.state, i.max_deliveries, i.lease_len, i.key,
           least(to_timestamp(i.expires_at), now() + make_interval(secs => i.expires)),
           i.result_ttl, i.after, i.body
    FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM __schema__.results r WHERE r.id = i.id)
      AND NOT EXISTS (SELECT 1 FROM __schema__.dead d WHERE d.id = i.id)
    ON CONFLICT (id) DO NOTHING
    RETURNING m.id, m.queue, m.state
),
joins AS (
    INSERT INTO __schema__.joins (id, mode, total, settled, succeeded, fired)
    SELECT j.id, j.mode, j.total, j.settled, j.succeeded, j.fired
    FROM unnest($15::text[], $16::text[], $17::int[], $18::int[], $19::int[], $20::bool[])
        AS j(id, mode, total, settled, succeeded, fired)
    WHERE j.id IN (SELECT id FROM inserted)
    ON CONFLICT (id) DO NOTHING
),
members AS (
    INSERT INTO __schema__.join_members (join_id, member)
    SELECT jm.join_id, jm.member
    FROM unnest($21::text[], $22::text[]) AS jm(join_id, member)
    WHERE jm.join_id IN (SELECT id FROM inserted)
)
-- Scheduled messages wake fetchers too, so that they re-plan their next look. The second
-- column: ids settled while this statement stored them again (settled_since, with $24 its
-- p_raise), to be deleted by the caller's transaction. Only an id that was a message when
-- this statement began can have been (its settle, not yet committed then, deleted it
-- meanwhile): a batch above the highest id in messages, as new ids are, skips the call
-- for the cost of one index read.
SELECT (SELECT count(pg_notify('__work__', w.queue))
        FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'pending') w),
       CASE WHEN (SELECT min(id) FROM inserted) <= (SELECT max(id) FROM __schema__.messages)
            THEN __schema__.settled_since(ARRAY(SELECT id FROM inserted), $24::boolean)
            ELSE '{}'::text[] END


-- name: insert_plain
-- insert_messages for messages without key, follow-up or join that share every option (a
-- bulk send, or a burst of one task's sends): $1 their ids, $2 their bodies, $3-$12 what they
-- share (queue, task, priority, delay, run_at, max_deliveries, lease, expires_at,
-- result_ttl, and the relative expires, resolved by now() as in insert_messages), $13
-- settled_since's p_raise. Two arrays instead of fourteen: binding costs per array element.
-- Inserted in id order, as insert_messages; an id already stored is skipped, and the second
-- column is as insert_messages's.
WITH inserted AS (
    INSERT INTO __schema__.messages AS m
        (id, queue, task, priority, due, state, max_deliveries, lease_len, expires_at,
         result_ttl, body)
    SELECT i.id, $3::text, $4::text, least(greatest($5::int, 0), 9),
           greatest(now() + make_interval(secs => $6::float8),
                    coalesce(to_timestamp($7::float8), '-infinity')),
           'pending', $8::int, $9::float8,
           least(to_timestamp($10::float8), now() + make_interval(secs => $12::float8)),
           $11::float8, i.body
    FROM unnest($1::text[], $2::bytea[]) AS i(id, body)
    WHERE NOT EXISTS (SELECT 1 FROM __schema__.results r WHERE r.id = i.id)
      AND NOT EXISTS (SELECT 1 FROM __schema__.dead d WHERE d.id = i.id)
    ORDER BY i.id
    ON CONFLICT (id) DO NOTHING
    RETURNING m.id
)
SELECT (SELECT count(pg_notify('__work__', $3::text)) FROM (SELECT 1 FROM inserted LIMIT 1) w),
       CASE WHEN (SELECT min(id) FROM inserted) <= (SELECT max(id) FROM __schema__.messages)
            THEN __schema__.settled_since(ARRAY(SELECT id FROM inserted), $13::boolean)
            ELSE '{}'::text[] END


-- name: insert_new
-- insert_plain for ids that are new, as a bulk send's almost always are: without ON
-- CONFLICT's speculative insertion (about a tenth of the cost of a row); an id already in
-- messages (or twice in the batch) raises unique_violation, and the caller then runs
-- insert_plain. Whether an id is an outcome's or a dead letter's is looked up only when the
-- batch's lowest id is not above the highest of each (two index reads, once): ids are
-- time-ordered, so a bulk send's usual batch is above them all. Its columns are insert_plain's.
WITH inserted AS (
    INSERT INTO __schema__.messages AS m
        (id, queue, task, priority, due, state, max_deliveries, lease_len, expires_at,
         result_ttl, body)
    SELECT i.id, $3::text, $4::text, least(greatest($5::int, 0), 9),
           greatest(now() + make_interval(secs => $6::float8),
                    coalesce(to_timestamp($7::float8), '-infinity')),
           'pending', $8::int, $9::float8,
           least(to_timestamp($10::float8), now() + make_interval(secs => $12::float8)),
           $11::float8, i.body
    FROM unnest($1::text[], $2::bytea[]) AS i(id, body)
    WHERE (SELECT min(x) FROM unnest($1::text[]) x) > greatest(
              (SELECT max(id) FROM __schema__.results), (SELECT max(id) FROM __schema__.dead), '')
       OR (NOT EXISTS (SELECT 1 FROM __schema__.results r WHERE r.id = i.id)
           AND NOT EXISTS (SELECT 1 FROM __schema__.dead d WHERE d.id = i.id))
    ORDER BY i.id
    RETURNING m.id
)
SELECT (SELECT count(pg_notify('__work__', $3::text)) FROM (SELECT 1 FROM inserted LIMIT 1) w),
       CASE WHEN (SELECT min(id) FROM inserted) <= (SELECT max(id) FROM __schema__.messages)
            THEN __schema__.settled_since(ARRAY(SELECT id FROM inserted), $13::boolean)
            ELSE '{}'::text[] END


-- name: unstore
-- Ids that settled_since found settled while an enqueue in a transaction stored them again:
-- their message and join counters go, before anything outside the transaction sees them.
WITH joined AS (
    DELETE FROM __schema__.join_members WHERE join_id = ANY($1::text[])
), counters AS (
    DELETE FROM __schema__.joins WHERE id = ANY($1::text[])
)
DELETE FROM __schema__.messages WHERE id = ANY($1::text[])


-- name: claim_keys
-- Take idempotency keys that are free or whose holder's time ran out; returns those taken.
INSERT INTO __schema__.keys AS k (key, id, expires_at)
SELECT t.key, t.id, now() + make_interval(secs => t.ttl)
FROM unnest($1::text[], $2::text[], $3::float8[]) AS t(key, id, ttl)
ON CONFLICT (key) DO UPDATE SET id = excluded.id, expires_at = excluded.expires_at
    WHERE k.expires_at <= now()
RETURNING k.key


-- name: key_holders
SELECT key, id FROM __schema__.keys WHERE key = ANY($1::text[])


-- name: mark_refs
-- Follow-ups and joins being enqueued: mark the messages they depend on as having dependants
-- (locked in id order, and held until this transaction ends). A concurrent settle of one of
-- them waits for this transaction, then re-reads the row and, seeing the mark, leaves it to
-- the statements of settle() that see what this transaction stored (0005_dependents.sql).
UPDATE __schema__.messages m SET dependents = true
FROM (SELECT id FROM __schema__.messages WHERE id = ANY($1::text[])
      ORDER BY id FOR NO KEY UPDATE) r
WHERE m.id = r.id AND NOT m.dependents


-- name: ref_outcomes
SELECT id, state FROM __schema__.results WHERE id = ANY($1::text[])


-- name: lease
-- Lease up to $2 due messages of the queues $1, in the order given, highest priority first,
-- then earliest due, then id, for worker $3, each for $4 seconds (NULL: its own lease). Rows
-- another transaction holds are skipped (SKIP LOCKED), so concurrent fetches never block
-- each other and never lease one message twice. The lateral scan seeks (queue, priority,
-- due <= now) in the fetch index and stops at $2 rows, so scheduled messages are never
-- walked over.
--
-- The last row (id NULL) reports: lapsed leases (the caller reclaims them first: when $5,
-- nothing is leased while any exist, so that they keep their place in the order), expired
-- messages (to dead-letter), and, when fewer than $2 were leased, the seconds until the next
-- message of these queues is due or the next lease runs out (NULL: nothing planned).
--
-- A paused queue (a live row of `pauses`, read once: one index probe per queue of the small
-- table) is skipped, and its due times are not reported; the time its pause ends by itself
-- is.
--
-- Its commit does not wait for the WAL flush (synchronous_commit off for this transaction
-- only; the statement runs in a transaction of its own): a lease is nobody's promise. If the
-- server crashes before the WAL writer flushes it (within wal_writer_delay), the message is
-- pending again after the restart and is delivered again, which at-least-once delivery
-- allows; the settle of the lost lease is refused (its attempt no longer matches). Saves an
-- fsync on the path of every message (about 0.4 ms of a round trip on this machine).
WITH flags AS (
    SELECT set_config('synchronous_commit', 'off', true) AS quick,
           EXISTS (SELECT 1 FROM __schema__.messages
                   WHERE state = 'leased' AND lease_until <= now()) AS lapsed,
           EXISTS (SELECT 1 FROM __schema__.messages
                   WHERE state = 'pending' AND expires_at <= now() AND due <= now()) AS expired
),
held AS MATERIALIZED (
    SELECT z.queue, z.until FROM __schema__.pauses z
    WHERE z.queue = ANY ($1::text[]) AND (z.until IS NULL OR z.until > now())
),
candidates AS MATERIALIZED (
    SELECT c.id
    FROM unnest($1::text[]) WITH ORDINALITY AS q(name, ord)
    CROSS JOIN generate_series(9, 0, -1) AS p(priority)
    CROSS JOIN LATERAL (
        SELECT m.id
        FROM __schema__.messages m
        WHERE m.queue = q.name AND m.priority = p.priority AND m.state = 'pending'
          AND m.due <= now() AND (m.expires_at IS NULL OR m.expires_at > now())
        ORDER BY m.due, m.id
        LIMIT $2
        FOR NO KEY UPDATE SKIP LOCKED
    ) c
    WHERE NOT ($5::bool AND (SELECT lapsed FROM flags))
      AND q.name <> ALL (ARRAY(SELECT queue FROM held))
    LIMIT $2
),
leased AS (
    UPDATE __schema__.messages m
    SET state = 'leased', attempt = m.attempt + 1, worker = $3,
        lease_until = now() + make_interval(secs => coalesce($4::float8, m.lease_len))
    WHERE m.id = ANY (ARRAY(SELECT id FROM candidates))
    RETURNING m.id, m.attempt, m.failures, m.body, coalesce($4::float8, m.lease_len) AS lease,
              array_position($1::text[], m.queue) AS ord, m.priority,
              extract(epoch FROM m.due)::float8 AS due,
              greatest(extract(epoch FROM now() - m.due)::float8, 0) AS waited
)
SELECT id, attempt, failures, body, lease, ord, priority, due, waited,
       NULL::bool AS lapsed, NULL::bool AS expired, NULL::float8 AS next_in
FROM leased
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, f.lapsed, f.expired,
       CASE WHEN (SELECT count(*) FROM leased) < $2 THEN (
           SELECT extract(epoch FROM min(t) - now())::float8
           FROM (
               SELECT (SELECT min(lease_until) FROM __schema__.messages
                       WHERE state = 'leased') AS t
               UNION ALL
               SELECT (SELECT m.due FROM __schema__.messages m
                       WHERE m.queue = q.name AND m.priority = p.priority
                         AND m.state = 'pending'
                         -- this statement's snapshot still sees those it leased as pending
                         AND m.id <> ALL (ARRAY(SELECT id FROM candidates))
                       ORDER BY m.due LIMIT 1)
               FROM unnest($1::text[]) AS q(name)
               CROSS JOIN generate_series(9, 0, -1) AS p(priority)
               WHERE q.name <> ALL (ARRAY(SELECT queue FROM held))
               UNION ALL
               SELECT min(until) FROM held
           ) planned
       ) END
FROM flags f


-- name: reclaim
-- Leases that ran out: dead-letter as poison those that ran out max_deliveries times, make
-- the others due again (at the moment their lease ended) with one more lost delivery; take
-- pending messages past their expires_at. Rows held by another transaction are left to it.
WITH poison AS (
    DELETE FROM __schema__.messages
    WHERE id IN (SELECT id FROM __schema__.messages
                 WHERE state = 'leased' AND lease_until <= now()
                   AND expiries + 1 >= max_deliveries
                 FOR UPDATE SKIP LOCKED)
    RETURNING id, queue, task, result_ttl, expiries + 1 AS expiries, body
),
lapsed AS (
    UPDATE __schema__.messages
    SET state = 'pending', expiries = expiries + 1, due = lease_until, worker = NULL
    WHERE id IN (SELECT id FROM __schema__.messages
                 WHERE state = 'leased' AND lease_until <= now()
                   AND expiries + 1 < max_deliveries
                 FOR NO KEY UPDATE SKIP LOCKED)
    RETURNING queue
),
expired AS (
    DELETE FROM __schema__.messages
    WHERE id IN (SELECT id FROM __schema__.messages
                 WHERE state = 'pending' AND expires_at <= now() AND due <= now()
                 FOR UPDATE SKIP LOCKED)
    RETURNING id, queue, task, result_ttl, body
)
SELECT 'poison' AS kind, id, queue, task, result_ttl, expiries, body FROM poison
UNION ALL
SELECT 'expired', id, queue, task, result_ttl, NULL, body FROM expired
UNION ALL
-- Wake the fetchers of the queues whose lapsed messages are due again.
SELECT 'woke', NULL, NULL, NULL, count(pg_notify('__work__', l.queue)), NULL, NULL
FROM (SELECT DISTINCT queue FROM lapsed) l


-- name: settle
-- The settle() function of the schema (0001_initial.sql): one round trip per batch.
SELECT applied_id, applied_attempt
FROM __schema__.settle($1::text[], $2::int[], $3::text[], $4::float8[], $5::bytea[],
                       $6::text[], $7::text[], $8::int[], $9::float8[], $10::float8,
                       $11::float8, '__work__', '__done__')


-- name: finish
-- The finish() function of the schema, for messages the caller's transaction took.
SELECT __schema__.finish($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[],
                         $6::float8[], $7::bytea[], $8::text[], $9::float8, $10::float8,
                         '__work__', '__done__')


-- name: extend
UPDATE __schema__.messages m
SET lease_until = now() + make_interval(secs => m.lease_len)
FROM unnest($1::text[], $2::int[]) AS h(id, attempt)
WHERE m.id = h.id AND m.attempt = h.attempt AND m.state = 'leased'
RETURNING m.id, m.attempt


-- name: release
-- Make held messages due again $3 seconds from now (a scheduled one wakes fetchers too, so
-- that they re-plan their next look).
WITH released AS (
    UPDATE __schema__.messages m
    SET state = 'pending', due = now() + make_interval(secs => $3::float8), worker = NULL
    FROM unnest($1::text[], $2::int[]) AS h(id, attempt)
    WHERE m.id = h.id AND m.attempt = h.attempt AND m.state = 'leased'
    RETURNING m.queue
)
SELECT count(*), (SELECT count(pg_notify('__work__', w.queue))
                  FROM (SELECT DISTINCT queue FROM released) w)
FROM released


-- name: results
SELECT body, extract(epoch FROM settled_at)::float8
FROM __schema__.results WHERE id = ANY($1::text[]) AND expires_at > now()


-- name: take_cancellable
-- Cancel: take the messages not running yet; mark the running ones for their holders.
WITH marked AS (
    UPDATE __schema__.messages SET cancel_requested = true
    WHERE id = ANY($1::text[]) AND state = 'leased' AND NOT cancel_requested
)
DELETE FROM __schema__.messages
WHERE id = ANY($1::text[]) AND state IN ('waiting', 'pending')
RETURNING id, queue, task, result_ttl, body


-- name: cancelling
SELECT m.id
FROM __schema__.messages m
JOIN unnest($1::text[], $2::int[]) AS h(id, attempt) ON m.id = h.id AND m.attempt = h.attempt
WHERE m.state = 'leased' AND m.cancel_requested


-- name: dead_letters
SELECT id, queue, task, reason, extract(epoch FROM died_at)::float8 AS died_at, body
FROM __schema__.dead
WHERE $1::text IS NULL OR queue = $1
ORDER BY died_at, id
LIMIT $2


-- name: take_dead
-- Requeue, first step: take the dead letters and forget their stored outcomes.
WITH taken AS (
    DELETE FROM __schema__.dead WHERE id = ANY($1::text[]) RETURNING id, queue, task, body
),
forgotten AS (
    DELETE FROM __schema__.results WHERE id IN (SELECT id FROM taken)
)
SELECT id, queue, task, body FROM taken


-- name: purge_dead
WITH purged AS (DELETE FROM __schema__.dead WHERE id = ANY($1::text[]) RETURNING 1)
SELECT count(*) FROM purged


-- name: purge_all_dead
WITH purged AS (DELETE FROM __schema__.dead RETURNING 1)
SELECT count(*) FROM purged


-- name: purge
WITH purged AS (
    DELETE FROM __schema__.messages
    WHERE queue = $1 AND state IN ('waiting', 'pending')
    RETURNING 1
)
SELECT count(*) FROM purged


-- name: inspect
-- One row: the message's columns, its kept outcome's and its dead letter's (each NULL when
-- absent), and now, for pigeon.backends.info.message_info.
SELECT extract(epoch FROM now())::float8 AS now, m.state, m.queue, m.task, m.attempt,
       m.failures, extract(epoch FROM m.due)::float8 AS due,
       extract(epoch FROM m.lease_until)::float8 AS lease_until, m.worker, m.body,
       m.cancel_requested, extract(epoch FROM m.sent_at)::float8 AS sent_at,
       r.body AS result, extract(epoch FROM r.settled_at)::float8 AS settled_at,
       d.queue AS dead_queue, d.task AS dead_task, d.reason, d.body AS dead_body
FROM (SELECT $1::text AS id) k
LEFT JOIN __schema__.messages m ON m.id = k.id
LEFT JOIN __schema__.results r ON r.id = k.id AND r.expires_at > now()
LEFT JOIN __schema__.dead d ON d.id = k.id


-- name: stats
SELECT 'messages' AS kind, queue AS name, state, due > now() AS later, count(*) AS n,
       NULL::bytea AS info, NULL::float8 AS last_seen
FROM __schema__.messages GROUP BY queue, state, later
UNION ALL
SELECT 'dead', queue, NULL, NULL, count(*), NULL, NULL FROM __schema__.dead GROUP BY queue
UNION ALL
SELECT 'results', NULL, NULL, NULL, count(*), NULL, NULL
FROM __schema__.results WHERE expires_at > now()
UNION ALL
SELECT 'worker', id, NULL, NULL, NULL, info, extract(epoch FROM last_seen)::float8
FROM __schema__.workers WHERE expires_at > now()


-- name: pause
-- Pause queue $1 with reason $2 until epoch $3 (NULL: until resumed), keeping the since of a
-- live pause; NULL when $3 is not after now() (nothing is written). Also returns now(), and
-- NOTIFYs `work` so that fetches sleeping on the queue look again and learn the new until.
WITH stored AS (
    INSERT INTO __schema__.pauses AS z (queue, reason, since, until)
    SELECT $1, $2, now(), to_timestamp($3::float8)
    WHERE $3::float8 IS NULL OR to_timestamp($3::float8) > now()
    ON CONFLICT (queue) DO UPDATE SET
        reason = excluded.reason,
        until = excluded.until,
        since = CASE WHEN z.until IS NULL OR z.until > now() THEN z.since ELSE now() END
    RETURNING z.queue, z.reason, z.since, z.until
)
SELECT (SELECT queue FROM stored), (SELECT reason FROM stored),
       (SELECT extract(epoch FROM since)::float8 FROM stored),
       (SELECT extract(epoch FROM until)::float8 FROM stored),
       extract(epoch FROM now())::float8,
       (SELECT count(pg_notify('__work__', queue)) FROM stored)


-- name: resume
-- End queue $1's pause: whether it was live, and a NOTIFY on `work` that wakes the fetches
-- sleeping on it (they look again).
WITH gone AS (
    DELETE FROM __schema__.pauses WHERE queue = $1 RETURNING until
)
SELECT coalesce((SELECT until IS NULL OR until > now() FROM gone), false),
       pg_notify('__work__', $1::text)


-- name: paused
SELECT queue, reason, extract(epoch FROM since)::float8, extract(epoch FROM until)::float8
FROM __schema__.pauses WHERE until IS NULL OR until > now() ORDER BY queue


-- name: vacuum
-- Dead rows and index entries of the hot table (see PostgresBackend._count_leases); skipped
-- when another session is vacuuming it already.
VACUUM (SKIP_LOCKED) __schema__.messages


-- name: heartbeat
INSERT INTO __schema__.workers AS w (id, expires_at, last_seen, info)
VALUES ($1, now() + make_interval(secs => $2), now(), $3)
ON CONFLICT (id) DO UPDATE
SET expires_at = excluded.expires_at, last_seen = excluded.last_seen, info = excluded.info


-- name: retire
DELETE FROM __schema__.workers WHERE id = $1


-- name: sweep_results
-- sweep_*: delete at most $1 expired rows per statement, so no transaction holds locks long.
WITH gone AS (
    DELETE FROM __schema__.results WHERE id IN (
        SELECT id FROM __schema__.results WHERE expires_at <= now()
        LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone


-- name: sweep_keys
WITH gone AS (
    DELETE FROM __schema__.keys WHERE key IN (
        SELECT key FROM __schema__.keys WHERE expires_at <= now()
        LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone


-- name: sweep_dead
WITH gone AS (
    DELETE FROM __schema__.dead WHERE id IN (
        SELECT id FROM __schema__.dead WHERE expires_at <= now()
        LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone


-- name: sweep_workers
WITH gone AS (
    DELETE FROM __schema__.workers WHERE id IN (
        SELECT id FROM __schema__.workers WHERE expires_at <= now()
        LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone


-- name: lock
-- Take or renew the lock $1 for owner $2 until now + $3 seconds: returns a row iff $2 holds
-- it afterwards. A concurrent taker waits for the row, then re-checks who holds it.
INSERT INTO __schema__.locks AS l (name, owner, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
    WHERE l.owner = excluded.owner OR l.expires_at <= now()
RETURNING l.owner


-- name: unlock
DELETE FROM __schema__.locks WHERE name = $1 AND owner = $2


-- name: schedules
-- The marks of the schedules named.
SELECT name, sent_up_to FROM __schema__.schedules WHERE name = ANY($1::text[])


-- name: mark_schedules
-- Raise the mark of each schedule $1[i] to $2[i]: a mark never moves back. (A name given
-- twice would make ON CONFLICT touch a row twice: the caller passes each name once.)
INSERT INTO __schema__.schedules AS s (name, sent_up_to)
SELECT * FROM unnest($1::text[], $2::float8[])
ON CONFLICT (name) DO UPDATE SET sent_up_to = greatest(s.sent_up_to, excluded.sent_up_to)


-- name: sweep_locks
WITH gone AS (
    DELETE FROM __schema__.locks WHERE name IN (
        SELECT name FROM __schema__.locks WHERE expires_at <= now()
        LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone


-- name: sweep_joins
-- The counters of joins whose message is gone (it ran, or was cancelled or purged), and
-- the member rows of joins that are gone. Not counted in sweep()'s answer.
WITH gone AS (
    DELETE FROM __schema__.joins WHERE id IN (
        SELECT j.id FROM __schema__.joins j
        WHERE NOT EXISTS (SELECT 1 FROM __schema__.messages m WHERE m.id = j.id)
        LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING id
),
members AS (
    DELETE FROM __schema__.join_members jm
    WHERE jm.join_id IN (SELECT id FROM gone)
       OR NOT EXISTS (SELECT 1 FROM __schema__.joins j WHERE j.id = jm.join_id)
)
SELECT count(*) FROM gone


-- name: sweep_buckets
-- Rate-limit buckets whose tat has passed are the same as absent ones.
WITH gone AS (
    DELETE FROM __schema__.buckets WHERE name IN (
        SELECT name FROM __schema__.buckets WHERE tat <= now()
        LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone


-- name: sweep_places
WITH gone AS (
    DELETE FROM __schema__.places WHERE (name, holder) IN (
        SELECT name, holder FROM __schema__.places WHERE expires_at <= now()
        LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone


-- name: sweep_progress
WITH gone AS (
    DELETE FROM __schema__.progress WHERE id IN (
        SELECT id FROM __schema__.progress WHERE expires_at <= now()
        LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone


-- name: take
-- The take() function of the schema (0004_limits_progress_events.sql): one call per batch.
SELECT __schema__.take($1::text[], $2::float8[], $3::int[], $4::float8[])


-- name: acquire
-- The acquire() function of the schema: one call per batch.
SELECT __schema__.acquire($1::text[], $2::text[], $3::int[], $4::float8[])


-- name: release_slots
DELETE FROM __schema__.places p
USING unnest($1::text[], $2::text[]) AS s(name, holder)
WHERE p.name = s.name AND p.holder = s.holder


-- name: report
-- The latest report of each id (one per id in a batch), kept until now + $3 seconds.
INSERT INTO __schema__.progress AS p (id, expires_at, body)
SELECT r.id, now() + make_interval(secs => $3::float8), r.body
FROM unnest($1::text[], $2::bytea[]) AS r(id, body)
ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, body = excluded.body


-- name: progress
SELECT body FROM __schema__.progress WHERE id = ANY($1::text[]) AND expires_at > now()


-- name: publish
-- The publish() function of the schema: appends, prunes now and then, notifies readers.
SELECT __schema__.publish($1::bytea[], $2::int8, $3::int8, '__events__')


-- name: events_end
-- The seq of the newest event (0: none yet): where a reader starting at the end begins.
SELECT coalesce(max(seq), 0) FROM __schema__.events


-- name: read_events
SELECT seq, body FROM __schema__.events WHERE seq > $1::int8 ORDER BY seq LIMIT $2


-- Listing (list_messages, listing.py) -------------------------------------------------------
-- Each walks one index down from $2 (exclusive) to $1 (inclusive), at most $3 entries.

-- name: list_live
SELECT id, state, queue, task, due > now() AS later
FROM __schema__.messages
WHERE id >= $1 AND id < $2 ORDER BY id DESC LIMIT $3

-- name: list_outcomes
SELECT id, state, coalesce(queue, '') AS queue, coalesce(task, '') AS task, error,
       expires_at > now() AS kept
FROM __schema__.results
WHERE id >= $1 AND id < $2 ORDER BY id DESC LIMIT $3

-- name: list_outcomes_queue
SELECT id, state, queue, task, error, expires_at > now() AS kept
FROM __schema__.results
WHERE queue = $4 AND id >= $1 AND id < $2 ORDER BY id DESC LIMIT $3

-- name: list_outcomes_task
SELECT id, state, queue, task, error, expires_at > now() AS kept
FROM __schema__.results
WHERE task = $4 AND id >= $1 AND id < $2 ORDER BY id DESC LIMIT $3

-- name: list_dead
SELECT id, queue, task, reason, expires_at > now() AS kept
FROM __schema__.dead
WHERE id >= $1 AND id < $2 ORDER BY id DESC LIMIT $3

-- name: key_id
SELECT id FROM __schema__.keys WHERE key = $1 AND expires_at > now()
