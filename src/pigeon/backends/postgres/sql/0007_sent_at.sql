-- pigeon's PostgreSQL schema, version 7: when each message was stored.
--
-- sent_at is the database clock (now(), the enqueue's transaction time) when the message was
-- stored, for `pigeon inspect`: the sender's created_at, in the body, is the sender's clock.
-- A default, so that no statement that inserts messages binds it (nothing is added to the
-- enqueue path). Rows stored before this version keep NULL: their sent time is not known.
ALTER TABLE messages ADD COLUMN sent_at timestamptz;
ALTER TABLE messages ALTER COLUMN sent_at SET DEFAULT now();
