-- The pigeon SQLite schema (user_version 6). Run inside BEGIN IMMEDIATE by a connection that
-- finds an older user_version; every statement is idempotent, so that several processes may
-- open one file at once and a database of an older version is brought up to date by running
-- the whole script again (which is why a version may only add tables and indexes).
--   version 1: messages, results, dead, keys, joins, join_members, workers
--   version 2: locks
--   version 3: buckets, slots, progress, events
--   version 4: schedules
--   version 5: pauses
--   version 6: history
--
-- Times are epoch seconds on the backend host's clock (time.time()). A message row lives
-- while the message can still run; its outcome then moves to `results` (and `dead`).

-- One row per message that can still run. state is waiting | pending | leased;
-- "scheduled" is derived: pending with due > now.
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    task TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('waiting', 'pending', 'leased')),
    attempt INTEGER NOT NULL DEFAULT 0,         -- deliveries so far: the fencing token
    failures INTEGER NOT NULL DEFAULT 0,        -- failed attempts (retries spent)
    expiries INTEGER NOT NULL DEFAULT 0,        -- leases that ran out without a settle
    max_deliveries INTEGER NOT NULL,
    lease_len REAL NOT NULL,                    -- the message's own lease, in seconds
    lease_until REAL,
    worker TEXT,
    key TEXT,
    expires_at REAL,
    result_ttl REAL NOT NULL,
    after TEXT,                                 -- held until this message has an outcome
    cancel_requested INTEGER NOT NULL DEFAULT 0,  -- cancel() was asked while it was leased
    body BLOB NOT NULL                          -- last, so reading the columns above is cheap
);

-- fetch: one queue, highest priority first, then earliest due, then id (FIFO).
CREATE INDEX IF NOT EXISTS messages_fetch
    ON messages (queue, priority DESC, due, id) WHERE state = 'pending';
-- fetch: leases that ran out.
CREATE INDEX IF NOT EXISTS messages_lease
    ON messages (lease_until) WHERE state = 'leased';
-- fetch: messages past their expires_at.
CREATE INDEX IF NOT EXISTS messages_expiry
    ON messages (expires_at) WHERE state = 'pending' AND expires_at IS NOT NULL;
-- settle: the follow-ups waiting for a message.
CREATE INDEX IF NOT EXISTS messages_after
    ON messages (after) WHERE state = 'waiting';

-- Stored outcomes; body is a msgspec-JSON pigeon.message.Result.
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    expires_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS results_expiry ON results (expires_at);

-- Dead letters; body is the message as it was stored.
CREATE TABLE IF NOT EXISTS dead (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    task TEXT NOT NULL,
    reason TEXT NOT NULL,
    died_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_died ON dead (died_at, id);

-- Idempotency keys: key -> the first message sent with it, until expires_at.
CREATE TABLE IF NOT EXISTS keys (
    key TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_expiry ON keys (expires_at);

-- Join counters, one row per join message; fired is set once, when the mode is satisfied.
CREATE TABLE IF NOT EXISTS joins (
    id TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    total INTEGER NOT NULL,
    settled INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    fired INTEGER NOT NULL DEFAULT 0
);

-- Members of joins that have not settled yet (a row is removed once it is counted).
-- A member listed twice in one join has two rows and counts twice, as it does in total.
CREATE TABLE IF NOT EXISTS join_members (
    member TEXT NOT NULL,
    join_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS join_members_member ON join_members (member);
CREATE INDEX IF NOT EXISTS join_members_join ON join_members (join_id);

-- Live workers; info is a msgspec-JSON pigeon.message.WorkerInfo.
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    info BLOB NOT NULL
);

-- Named locks (the scheduler's leader lock): held by owner until expires_at.
CREATE TABLE IF NOT EXISTS locks (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
);

-- The scheduler's marks (mark_schedules): every tick of schedule `name` has been sent up to
-- sent_up_to (epoch seconds, backend clock). Only ever raised; never expires (one tiny row
-- per schedule, so sweep leaves them).
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    sent_up_to REAL NOT NULL
);

-- Rate-limit buckets (take): the bucket's theoretical arrival time (GCRA). A bucket whose
-- tat has passed is the same as an absent one.
CREATE TABLE IF NOT EXISTS buckets (
    bucket TEXT PRIMARY KEY,
    tat REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS buckets_tat ON buckets (tat);

-- Places of concurrency limits (acquire): one per (name, holder), counted while unexpired.
CREATE TABLE IF NOT EXISTS slots (
    name TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (name, holder)
);
CREATE INDEX IF NOT EXISTS slots_expiry ON slots (expires_at);

-- The latest progress report of each message; body is a msgspec-JSON pigeon.message.Progress.
CREATE TABLE IF NOT EXISTS progress (
    id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS progress_expiry ON progress (expires_at);

-- The shared event log; body is a msgspec-JSON pigeon.message.Event. AUTOINCREMENT: a seq is
-- never reused, even after older events are pruned, so a reader's cursor (str(seq)) only
-- moves forward.
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL
);

-- Paused queues (pause): a queue is not fetched while its row's until is NULL or later than
-- now. A row whose until has passed counts as none (pause replaces it, resume deletes it).
CREATE TABLE IF NOT EXISTS pauses (
    queue TEXT PRIMARY KEY,
    reason TEXT,
    since REAL NOT NULL,
    until REAL
);

-- What list_messages reads of a kept outcome: one row per row of `results`, written in the
-- same settle and swept at the same expires_at (a dead letter is listed from `dead`). The
-- outcomes stored before version 6 have none (they are not listed).
CREATE TABLE IF NOT EXISTS history (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    task TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,                                 -- the error's type, when it has one
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS history_queue ON history (queue, id);
CREATE INDEX IF NOT EXISTS history_task ON history (task, id);
CREATE INDEX IF NOT EXISTS history_expiry ON history (expires_at);

PRAGMA user_version = 6;
