-- pigeon's PostgreSQL schema, version 4: rate limits, concurrency limits, progress reports
-- and the event log.

-- Rate-limit buckets (take): each keeps its theoretical arrival time (GCRA). A bucket whose
-- tat has passed is the same as an absent one: sweep() deletes it.
CREATE TABLE buckets (
    name text PRIMARY KEY,
    tat timestamptz NOT NULL
);
CREATE INDEX buckets_tat ON buckets (tat);

-- Places of concurrency limits (acquire): one row per (limit, holder) until it expires or is
-- released. Expired places do not count; sweep() deletes them.
CREATE TABLE places (
    name text NOT NULL,
    holder text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (name, holder)
);
CREATE INDEX places_expiry ON places (expires_at);

-- The latest progress report of each message; body is a msgspec-JSON pigeon.message.Progress.
CREATE TABLE progress (
    id text PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX progress_expiry ON progress (expires_at);

-- The event log shared by every client; body is a msgspec-JSON pigeon.message.Event. A
-- reader's cursor is the seq of the last event it read. publish() keeps the newest p_kept.
CREATE TABLE events (
    seq bigserial PRIMARY KEY,
    body bytea NOT NULL
);
-- Rows are appended at one end and pruned at the other in bulk.
ALTER TABLE events SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);
-- Progress reports are replaced many times per message.
ALTER TABLE progress SET (
    fillfactor = 85,
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);

-- take: start slots from token buckets by the generic cell rate algorithm, one take at a
-- time in the order given; returns, per take, the seconds from now until its slot. The
-- buckets of the batch are locked first, in name order (two batches never wait on each
-- other's buckets in opposite orders), and "now" is read once they are held: callers of a
-- bucket are served one after the other, each at a later now than the one before.
CREATE FUNCTION take(
    p_buckets text[], p_intervals float8[], p_bursts int[], p_holds float8[]
) RETURNS float8[] LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_now timestamptz;
    v_tat timestamptz;
    v_wait float8;
    v_waits float8[] := '{}';
BEGIN
    IF coalesce(cardinality(p_buckets), 0) = 0 THEN
        RETURN v_waits;
    END IF;
    -- Insert the absent buckets (tat -infinity: none yet) and lock every one of them; an
    -- ON CONFLICT DO UPDATE whose WHERE is false locks the existing row without writing it.
    INSERT INTO buckets AS b (name, tat)
    SELECT DISTINCT t.name, '-infinity'::timestamptz FROM unnest(p_buckets) AS t(name)
    ORDER BY t.name
    ON CONFLICT (name) DO UPDATE SET tat = b.tat WHERE false;
    v_now := clock_timestamp();
    FOR i IN 1 .. cardinality(p_buckets) LOOP
        SELECT greatest(b.tat, v_now) INTO v_tat FROM buckets b WHERE b.name = p_buckets[i];
        v_wait := greatest(0.0, extract(epoch FROM v_tat - v_now)::float8
                                - (p_bursts[i] - 1) * p_intervals[i]);
        IF v_wait <= p_holds[i] THEN
            UPDATE buckets SET tat = v_tat + make_interval(secs => p_intervals[i])
            WHERE name = p_buckets[i];
        END IF;
        v_waits := v_waits || v_wait;
    END LOOP;
    RETURN v_waits;
END
$$;

-- acquire: one place of the limit p_names[i] for p_holders[i], one slot at a time in the
-- order given; returns, per slot, whether the holder has a place afterwards. The limits of
-- the batch are serialized by transaction-level advisory locks (taken in key order, so two
-- batches never deadlock), and "now" is read once they are held: the places counted are
-- those committed by every acquirer before this one, so a limit is never exceeded.
CREATE FUNCTION acquire(
    p_names text[], p_holders text[], p_limits int[], p_ttls float8[]
) RETURNS boolean[] LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_now timestamptz;
    v_live bigint;
    v_got boolean[] := '{}';
BEGIN
    IF coalesce(cardinality(p_names), 0) = 0 THEN
        RETURN v_got;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), k.key)
    FROM (SELECT DISTINCT hashtext('limit:' || n) AS key FROM unnest(p_names) AS n
          ORDER BY 1) k;
    v_now := clock_timestamp();
    FOR i IN 1 .. cardinality(p_names) LOOP
        -- A holder with an unexpired place keeps it: a renewal.
        UPDATE places SET expires_at = v_now + make_interval(secs => p_ttls[i])
        WHERE name = p_names[i] AND holder = p_holders[i] AND expires_at > v_now;
        IF FOUND THEN
            v_got := v_got || true;
            CONTINUE;
        END IF;
        SELECT count(*) INTO v_live FROM places
        WHERE name = p_names[i] AND expires_at > v_now;
        IF v_live < p_limits[i] THEN
            INSERT INTO places AS p (name, holder, expires_at)
            VALUES (p_names[i], p_holders[i], v_now + make_interval(secs => p_ttls[i]))
            ON CONFLICT (name, holder) DO UPDATE SET expires_at = excluded.expires_at;
            v_got := v_got || true;
        ELSE
            v_got := v_got || false;
        END IF;
    END LOOP;
    RETURN v_got;
END
$$;

-- publish: append events to the log in the order given and notify the readers (payload:
-- the newest seq). Publishers are serialized by a transaction-level advisory lock taken
-- before their seqs are drawn, so seqs become visible in order: a reader that has seen seq
-- n never later finds a smaller one committed. Every time the log passes a multiple of
-- p_prune_every, events older than the newest p_kept are deleted.
CREATE FUNCTION publish(
    p_bodies bytea[], p_kept bigint, p_prune_every bigint, p_channel text
) RETURNS bigint LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_first bigint;
    v_last bigint;
BEGIN
    IF coalesce(cardinality(p_bodies), 0) = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), hashtext('events'));
    WITH appended AS (
        INSERT INTO events (body)
        SELECT e.body FROM unnest(p_bodies) WITH ORDINALITY AS e(body, n) ORDER BY e.n
        RETURNING seq
    )
    SELECT min(seq), max(seq) INTO v_first, v_last FROM appended;
    IF (v_first - 1) / p_prune_every <> v_last / p_prune_every THEN
        DELETE FROM events WHERE seq <= v_last - p_kept;
    END IF;
    PERFORM pg_notify(p_channel, v_last::text);
    RETURN v_last;
END
$$;
