-- pigeon's PostgreSQL schema, version 1.
--
-- Applied by `pigeon migrate` (or on first use) in one transaction, under an advisory lock,
-- with search_path set to pigeon's schema (the URL's ?schema=, default "pigeon"): every table
-- lives in that schema. Times are the database clock's (now()), never a client's.
--
-- A message row lives only while the message can still run; when it settles, the row is
-- deleted and its outcome goes to `results` (and `dead`), so the hot table stays as small as
-- the backlog however many messages have passed through it.

-- One row per message that can still run. state is waiting | pending | leased; "scheduled"
-- is derived: pending with due > now().
CREATE TABLE messages (
    id text PRIMARY KEY,
    queue text NOT NULL,
    task text NOT NULL,
    priority smallint NOT NULL DEFAULT 0,       -- 0-9, higher first
    due timestamptz NOT NULL,
    state text NOT NULL CHECK (state IN ('waiting', 'pending', 'leased')),
    attempt integer NOT NULL DEFAULT 0,         -- deliveries so far: the fencing token
    failures integer NOT NULL DEFAULT 0,        -- failed attempts (retries spent)
    expiries integer NOT NULL DEFAULT 0,        -- leases that ran out without a settle
    max_deliveries integer NOT NULL,
    lease_len double precision NOT NULL,        -- the message's own lease, in seconds
    lease_until timestamptz,
    worker text,
    key text,
    expires_at timestamptz,
    result_ttl double precision NOT NULL,
    after text,                                 -- held until this message has an outcome
    body bytea NOT NULL                         -- the message as pigeon.codec encodes it
);

-- fetch: one queue and priority at a time, earliest due first, then id (FIFO).
CREATE INDEX messages_fetch ON messages (queue, priority DESC, due, id) WHERE state = 'pending';
-- fetch: leases that ran out.
CREATE INDEX messages_lease ON messages (lease_until) WHERE state = 'leased';
-- fetch: messages past their expires_at.
CREATE INDEX messages_expiry ON messages (expires_at)
    WHERE state = 'pending' AND expires_at IS NOT NULL;
-- settle: the follow-ups waiting for a message.
CREATE INDEX messages_after ON messages (after) WHERE state = 'waiting';

-- Stored outcomes; body is a pigeon.message.Result as pigeon.codec encodes it, except its
-- settled_at, which is the database clock's and kept apart.
CREATE TABLE results (
    id text PRIMARY KEY,
    state text NOT NULL,
    settled_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX results_expiry ON results (expires_at);

-- Dead letters; body is the message as it was stored.
CREATE TABLE dead (
    id text PRIMARY KEY,
    queue text NOT NULL,
    task text NOT NULL,
    reason text NOT NULL,
    died_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX dead_died ON dead (died_at, id);
CREATE INDEX dead_expiry ON dead (expires_at);

-- Idempotency keys: key -> the first message sent with it, until expires_at.
CREATE TABLE keys (
    key text PRIMARY KEY,
    id text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX keys_expiry ON keys (expires_at);

-- Join counters, one row per join message; fired is set once, when the mode is satisfied.
CREATE TABLE joins (
    id text PRIMARY KEY,
    mode text NOT NULL,
    total integer NOT NULL,
    settled integer NOT NULL DEFAULT 0,
    succeeded integer NOT NULL DEFAULT 0,
    fired boolean NOT NULL DEFAULT false
);

-- Members of joins that have not settled yet (a row is removed once it is counted).
-- A member listed twice in one join has two rows and counts twice, as it does in total.
CREATE TABLE join_members (
    member text NOT NULL,
    join_id text NOT NULL
);
CREATE INDEX join_members_member ON join_members (member);
CREATE INDEX join_members_join ON join_members (join_id);

-- Live workers; info is a msgspec-JSON pigeon.message.WorkerInfo (last_seen kept apart).
CREATE TABLE workers (
    id text PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    info bytea NOT NULL
);

-- Settling messages for good (settle, cancel, poison, expiry), in the caller's transaction;
-- their rows are already deleted. Stores each outcome ($4: encoded) for its ttl, or for
-- p_keep seconds when the ttl is 0 but follow-ups or joins wait on it (the first stored
-- outcome of an id wins); stores dead letters (p_reasons not NULL) for p_dead_ttl seconds;
-- makes the follow-ups waiting on them pending; counts them in their joins, firing each
-- join whose mode is satisfied; notifies the waiters of their ids and the fetchers of the
-- queues that got work. Each statement here sees what transactions committed before it
-- (a VOLATILE function takes a snapshot per statement): a follow-up or join enqueued while
-- its parent was being deleted is found.
CREATE FUNCTION finish(
    p_ids text[], p_queues text[], p_tasks text[], p_messages bytea[], p_states text[],
    p_ttls float8[], p_results bytea[], p_reasons text[],
    p_keep float8, p_dead_ttl float8, p_work_channel text, p_done_channel text
) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_woken text[];
    v_members text[];
    v_fired text[];
    v_queues text[];
    v_stored text[];
    v_news text[];
BEGIN
    WITH woken AS (
        UPDATE messages m SET state = 'pending'
        WHERE m.state = 'waiting' AND m.after = ANY (p_ids)
        RETURNING m.after, m.queue
    )
    SELECT coalesce(array_agg(DISTINCT w.after), '{}'), coalesce(array_agg(DISTINCT w.queue), '{}')
    INTO v_woken, v_queues FROM woken w;

    -- Count each member once per join row it has; the mode rule is pigeon.backends.base's
    -- join_fired, which the conformance suite checks on every backend.
    WITH memberships AS (
        DELETE FROM join_members jm WHERE jm.member = ANY (p_ids)
        RETURNING jm.join_id, jm.member
    ),
    counts AS (
        SELECT ms.join_id, count(*) AS settled,
               count(*) FILTER (WHERE d.state = 'succeeded') AS succeeded,
               array_agg(ms.member) AS members
        FROM memberships ms
        JOIN unnest(p_ids, p_states) AS d(id, state) ON d.id = ms.member
        GROUP BY ms.join_id
    ),
    counted AS (
        UPDATE joins j
        SET settled = j.settled + c.settled, succeeded = j.succeeded + c.succeeded,
            fired = CASE j.mode
                WHEN 'all' THEN (j.settled + c.settled) - (j.succeeded + c.succeeded) > 0
                             OR j.settled + c.settled >= j.total
                WHEN 'all_settled' THEN j.settled + c.settled >= j.total
                WHEN 'any' THEN j.succeeded + c.succeeded > 0 OR j.settled + c.settled >= j.total
                WHEN 'race' THEN j.settled + c.settled > 0
            END
        FROM counts c
        WHERE j.id = c.join_id AND NOT j.fired
        RETURNING j.id, j.fired
    )
    SELECT coalesce((SELECT array_agg(m) FROM counts c, unnest(c.members) m), '{}'),
           coalesce((SELECT array_agg(id) FROM counted WHERE fired), '{}')
    INTO v_members, v_fired;

    -- The news for waiters: "id<TAB>settled_at<TAB>result" for each outcome stored here
    -- (short enough to travel in a notification), else the bare id: look it up.
    WITH stored AS (
        INSERT INTO results (id, state, settled_at, expires_at, body)
        SELECT d.id, d.state, now(),
               now() + make_interval(secs => CASE WHEN d.ttl > 0 THEN d.ttl ELSE p_keep END),
               d.result
        FROM unnest(p_ids, p_states, p_ttls, p_results) AS d(id, state, ttl, result)
        WHERE d.ttl > 0 OR d.id = ANY (v_woken) OR d.id = ANY (v_members)
        ON CONFLICT (id) DO NOTHING
        RETURNING id, body
    )
    SELECT coalesce(array_agg(s.id), '{}'),
           coalesce(array_agg(CASE WHEN length(s.body) <= 2000
                                   THEN s.id || E'\t' || extract(epoch FROM now())::float8
                                        || E'\t' || convert_from(s.body, 'UTF8')
                                   ELSE s.id END), '{}')
    INTO v_stored, v_news
    FROM stored s;
    v_news := v_news || ARRAY(SELECT i FROM unnest(p_ids) i WHERE i <> ALL (v_stored));

    INSERT INTO dead AS dl (id, queue, task, reason, died_at, expires_at, body)
    SELECT l.id, l.queue, l.task, l.reason, now(), now() + make_interval(secs => p_dead_ttl),
           l.body
    FROM unnest(p_ids, p_queues, p_tasks, p_reasons, p_messages)
        AS l(id, queue, task, reason, body)
    WHERE l.reason IS NOT NULL
    ON CONFLICT (id) DO UPDATE
    SET queue = excluded.queue, task = excluded.task, reason = excluded.reason,
        died_at = excluded.died_at, expires_at = excluded.expires_at, body = excluded.body;

    IF cardinality(v_fired) > 0 THEN
        WITH woken AS (
            UPDATE messages m SET state = 'pending'
            WHERE m.id = ANY (v_fired) AND m.state = 'waiting'
            RETURNING m.queue
        )
        SELECT v_queues || coalesce(array_agg(DISTINCT w.queue), '{}') INTO v_queues FROM woken w;
    END IF;

    -- News lines (at most ~2,100 bytes each) joined by newlines, in notifications of under
    -- 8,000 bytes (the limit).
    PERFORM pg_notify(p_done_channel, string_agg(c.line, E'\n' ORDER BY c.n))
    FROM (SELECT d.line, d.n,
                 (sum(octet_length(d.line) + 1) OVER (ORDER BY d.n) / 5000)::int AS chunk
          FROM unnest(v_news) WITH ORDINALITY AS d(line, n)) c
    GROUP BY c.chunk;
    PERFORM pg_notify(p_work_channel, q) FROM (SELECT DISTINCT q FROM unnest(v_queues) q) w;
END
$$;

-- Settle: apply final outcomes and retries, each only while its message is leased as the
-- outcome's attempt; returns the (id, attempt) of those applied. A final outcome deletes the
-- message and finishes it (above); a retry makes it pending p_retry_in seconds from now with
-- one more failure. One call, one round trip: the whole settle of a batch.
CREATE FUNCTION settle(
    p_ids text[], p_attempts int[], p_states text[], p_ttls float8[], p_results bytea[],
    p_reasons text[], p_retry_ids text[], p_retry_attempts int[], p_retry_in float8[],
    p_keep float8, p_dead_ttl float8, p_work_channel text, p_done_channel text
) RETURNS TABLE (applied_id text, applied_attempt integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_ids text[];
    v_attempts int[];
    v_queues text[];
    v_tasks text[];
    v_messages bytea[];
    v_states text[];
    v_ttls float8[];
    v_results bytea[];
    v_reasons text[];
BEGIN
    IF cardinality(p_retry_ids) > 0 THEN
        RETURN QUERY
        WITH retried AS (
            UPDATE messages m
            SET state = 'pending', failures = m.failures + 1, worker = NULL,
                due = now() + make_interval(secs => h.retry_in)
            FROM unnest(p_retry_ids, p_retry_attempts, p_retry_in) AS h(id, attempt, retry_in)
            WHERE m.id = h.id AND m.attempt = h.attempt AND m.state = 'leased'
            RETURNING m.id, m.attempt, m.queue
        ),
        woke AS (
            SELECT count(pg_notify(p_work_channel, r.queue)) AS n
            FROM (SELECT DISTINCT queue FROM retried) r
        )
        SELECT r.id, r.attempt FROM retried r, woke;
    END IF;
    IF cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;

    WITH taken AS (
        DELETE FROM messages m
        USING unnest(p_ids, p_attempts) AS h(id, attempt)
        WHERE m.id = h.id AND m.attempt = h.attempt AND m.state = 'leased'
        RETURNING m.id, m.attempt, m.queue, m.task, m.body
    )
    SELECT array_agg(t.id), array_agg(t.attempt), array_agg(t.queue), array_agg(t.task),
           array_agg(t.body), array_agg(i.state), array_agg(i.ttl), array_agg(i.result),
           array_agg(i.reason)
    INTO v_ids, v_attempts, v_queues, v_tasks, v_messages, v_states, v_ttls, v_results,
         v_reasons
    FROM taken t
    JOIN unnest(p_ids, p_attempts, p_states, p_ttls, p_results, p_reasons)
        AS i(id, attempt, state, ttl, result, reason)
        ON i.id = t.id AND i.attempt = t.attempt;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    PERFORM finish(v_ids, v_queues, v_tasks, v_messages, v_states, v_ttls, v_results,
                   v_reasons, p_keep, p_dead_ttl, p_work_channel, p_done_channel);
    RETURN QUERY SELECT * FROM unnest(v_ids, v_attempts);
END
$$;
