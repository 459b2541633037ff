-- pigeon's PostgreSQL schema, version 3: cancelling running messages, and named locks.

-- cancel() of a leased message marks it; its holder learns of it through cancelling(). The
-- mark stays with the message (a lapsed lease, a release, a retry) until it settles.
-- A constant default: added without rewriting the table.
ALTER TABLE messages ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;

-- Named locks with an expiry (the scheduler's leader lock): free when expired or unlocked.
CREATE TABLE locks (
    name text PRIMARY KEY,
    owner text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX locks_expiry ON locks (expires_at);
