-- pigeon's PostgreSQL schema, version 5: a settle without dependants in one statement.
--
-- Most messages have no follow-up and belong to no join, yet settle() looked for both with
-- statements of their own (and handed every row to finish() to do it): about half the
-- server time of a one-message settle. A message now carries whether anything depends on
-- it, set by the enqueue of the follow-up or join (queries.sql, mark_refs), and settle()
-- takes the messages without dependants in one statement; only the others go the long way.
--
-- Why a flag on the message row and not a look at the follow-ups: a follow-up enqueued by
-- a transaction that commits while the settle waits for the parent's row is invisible to
-- the settle's statement (its snapshot is older), but the flag is a change of the row
-- itself, which the waiting DELETE re-reads (EvalPlanQual) before it deletes: the parent
-- is then left to the long way, whose later statements see the follow-up.
-- A constant default: added without rewriting the table.
ALTER TABLE messages ADD COLUMN dependents boolean NOT NULL DEFAULT false;

-- What already depends on a message stored before this version.
UPDATE messages SET dependents = true
WHERE id IN (SELECT after FROM messages WHERE state = 'waiting' AND after IS NOT NULL)
   OR id IN (SELECT member FROM join_members);

-- settle(): as in version 1, with the messages without dependants (almost all) taken,
-- stored, dead-lettered and announced by the first statement. What it leaves (messages
-- with dependants, and outcomes refused: not leased as their attempt) goes the long way:
-- delete, then finish(), whose statements see the follow-ups and joins committed since.
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
        INSERT INTO results (id, state, settled_at, expires_at, body)
        SELECT d.id, d.state, now(), now() + make_interval(secs => d.ttl), d.result
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
