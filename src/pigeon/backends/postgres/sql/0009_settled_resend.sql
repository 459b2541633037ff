-- pigeon's PostgreSQL schema, version 9: an id sent again while its message settles.
--
-- An enqueue skips an id that has an outcome or a dead letter (the NOT EXISTS of
-- insert_messages, insert_plain and insert_new), but it reads those tables as its statement's
-- snapshot saw them. A settle that commits after that snapshot deletes the id's message and
-- stores its outcome: the insert, which waited for the settle's lock on the row (or found it
-- gone), then stores the id again, and it would run a second time. settled_since() reads the
-- outcomes and dead letters again after the insert, with a snapshot of its own (each
-- statement of a VOLATILE function takes one), and returns the ids among p_ids that have
-- either. With p_raise (an enqueue outside a transaction) it raises SQLSTATE PGSET instead,
-- which undoes the statement: the caller sends again, and now sees the outcome. In a
-- transaction the caller deletes what it returns (unstore in queries.sql). Only an id that
-- was a message when the insert began can have settled under it, so the inserts call this
-- only when their lowest id is not above the highest in messages (new ids are above it).
CREATE FUNCTION settled_since(p_ids text[], p_raise boolean) RETURNS text[]
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_settled text[];
BEGIN
    IF coalesce((SELECT min(x) FROM unnest(p_ids) x) > greatest(
            (SELECT max(id) FROM results), (SELECT max(id) FROM dead), ''), true) THEN
        RETURN '{}';
    END IF;
    SELECT array_agg(i.id) INTO v_settled
    FROM unnest(p_ids) AS i(id)
    WHERE EXISTS (SELECT 1 FROM results r WHERE r.id = i.id)
       OR EXISTS (SELECT 1 FROM dead d WHERE d.id = i.id);
    IF v_settled IS NULL THEN
        RETURN '{}';
    END IF;
    IF p_raise THEN
        RAISE EXCEPTION 'settled while it was being stored again: %', v_settled[1]
            USING ERRCODE = 'PGSET';
    END IF;
    RETURN v_settled;
END
$$;
