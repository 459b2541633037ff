-- pigeon's PostgreSQL schema, version 10: what list_messages reads of a kept outcome.
--
-- A finished message is listed from its row of `results` for as long as the outcome is
-- kept, so the row now carries the queue and task of its message and the type of its error
-- (NULL for a success; for a failure the "type" of the stored Result's error, read by a
-- regular expression, which never raises, and only for outcomes that are not successes).
-- finish() and settle() are those of versions 1 and 5 with only their INSERT INTO results
-- widened. Outcomes stored before this version have no queue or task (listed with '').
-- No default: adding the columns rewrites nothing.
ALTER TABLE results ADD COLUMN queue text, ADD COLUMN task text, ADD COLUMN error text;

-- list_messages: the kept outcomes of a queue, or of a task, newest first (ids are
-- time-ordered); the primary key serves the rest, and the id ranges of every listing.
CREATE INDEX results_queue ON results (queue, id);
CREATE INDEX results_task ON results (task, id);

CREATE OR REPLACE FUNCTION finish(
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
        INSERT INTO results (id, state, settled_at, expires_at, body, queue, task, error)
        SELECT d.id, d.state, now(),
               now() + make_interval(secs => CASE WHEN d.ttl > 0 THEN d.ttl ELSE p_keep END),
               d.result, d.queue, d.task,
               CASE WHEN d.state <> 'succeeded' THEN substring(
                   convert_from(d.result, 'UTF8') FROM '"error":\{"type":"([^"\\]*)"') END
        FROM unnest(p_ids, p_states, p_ttls, p_results, p_queues, p_tasks)
            AS d(id, state, ttl, result, queue, task)
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

CREATE OR REPLACE FUNCTION settle(
    p_ids text[], p_attempts int[], p_states text[], p_ttls float8[], p_results bytea[],
    p_reasons text[], p_retry_ids text[], p_retry_attempts int[], p_retry_in float8[],
    p_keep float8, p_dead_ttl float8, p_work_channel text, p_done_channel text
) RETURNS TABLE (applied_id text, applied_attempt integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_quick bigint;
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

    -- finish()'s work for messages without dependants, in one statement: store the
    -- outcome for its ttl (none when 0: nothing waits on it), the dead letter, and the
    -- news for waiters in notifications of under 8,000 bytes (see finish()).
    RETURN QUERY
    WITH input AS (
        SELECT *
        FROM unnest(p_ids, p_attempts, p_states, p_ttls, p_results, p_reasons)
            AS i(id, attempt, state, ttl, result, reason)
    ),
    taken AS (
        DELETE FROM messages m
        USING unnest(p_ids, p_attempts) AS h(id, attempt)
        WHERE m.id = h.id AND m.attempt = h.attempt AND m.state = 'leased'
          AND NOT m.dependents
        RETURNING m.id, m.attempt, m.queue, m.task, m.body
    ),
    done AS (
        SELECT t.id, t.attempt, t.queue, t.task, t.body, i.state, i.ttl, i.result, i.reason
        FROM taken t
        JOIN input i ON i.id = t.id AND i.attempt = t.attempt
    ),
    stored AS (
        INSERT INTO results (id, state, settled_at, expires_at, body, queue, task, error)
        SELECT d.id, d.state, now(), now() + make_interval(secs => d.ttl), d.result,
               d.queue, d.task,
               CASE WHEN d.state <> 'succeeded' THEN substring(
                   convert_from(d.result, 'UTF8') FROM '"error":\{"type":"([^"\\]*)"') END
        FROM done d
        WHERE d.ttl > 0
        ON CONFLICT (id) DO NOTHING
        RETURNING id, body
    ),
    buried AS (
        INSERT INTO dead AS dl (id, queue, task, reason, died_at, expires_at, body)
        SELECT d.id, d.queue, d.task, d.reason, now(),
               now() + make_interval(secs => p_dead_ttl), d.body
        FROM done d
        WHERE d.reason IS NOT NULL
        ON CONFLICT (id) DO UPDATE
        SET queue = excluded.queue, task = excluded.task, reason = excluded.reason,
            died_at = excluded.died_at, expires_at = excluded.expires_at, body = excluded.body
    ),
    news AS (
        SELECT s.id,
               CASE WHEN length(s.body) <= 2000
                    THEN s.id || E'\t' || extract(epoch FROM now())::float8
                         || E'\t' || convert_from(s.body, 'UTF8')
                    ELSE s.id END AS line
        FROM stored s
        UNION ALL
        -- nothing stored now (a ttl of 0, or an outcome stored before): the bare id
        SELECT d.id, d.id
        FROM done d
        WHERE d.ttl <= 0 OR d.id <> ALL (ARRAY(SELECT id FROM stored))
    ),
    announced AS (
        SELECT count(pg_notify(p_done_channel, c.lines)) AS n
        FROM (
            SELECT string_agg(n.line, E'\n' ORDER BY n.id) AS lines
            FROM (SELECT line, id,
                         (sum(octet_length(line) + 1) OVER (ORDER BY id) / 5000)::int AS chunk
                  FROM news) n
            GROUP BY n.chunk
        ) c
    )
    SELECT d.id, d.attempt FROM done d, announced;
    GET DIAGNOSTICS v_quick = ROW_COUNT;
    IF v_quick >= cardinality(p_ids) THEN
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
