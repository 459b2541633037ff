"""``sqlite:///path.db``: the embedded default, safe across processes on one machine.

How it keeps the contract of :mod:`pigeon.backends.base`:

- One database file in WAL mode (readers never block the writer), ``synchronous=NORMAL`` and
  a 5 s busy timeout. Every write is one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's
  single write lock before it reads anything: two fetches, in this process or in another,
  are serialized, so a message is never leased twice, and a settle happens whole or not at
  all.
- Every call is batched: one executor hop and one transaction however many messages it
  carries. Ids travel as one JSON array (``json_each``), so each statement is prepared once
  and reused whatever the batch size.
- All database work runs on one thread per backend object, which alone uses the sqlite3
  connection; the event loop never waits on the disk.
- SQLite cannot push, so ``fetch(wait=...)``, ``wait`` and ``read_events(wait=...)`` poll
  with :class:`base.Poller`: fast at first, slower while idle, and woken at once by this
  object's own writes. An idle fetch polls with a read and takes the write lock only when
  something is due.
- The backend clock is SQLite's own reading of the host clock (``julianday('now')``, in
  milliseconds), never the caller's; every deadline is computed here. ``take`` and
  ``acquire`` read it under the write lock, so that concurrent callers see one order.
- The event log is a table keyed by an ``AUTOINCREMENT`` seq (the cursor is ``str(seq)``),
  pruned by ``publish`` to the newest ``EVENTS_KEPT`` every ``EVENTS_PRUNE_EVERY`` events.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib.resources
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Literal, TypeVar, TypeVarTuple, cast

import msgspec

from pigeon import codec
from pigeon.backends.base import DEAD_LETTER_TTL, EVENTS_KEPT, Poller, join_fired, redact
from pigeon.errors import BackendError, ConfigError
from pigeon.message import (
    DeadLetter,
    Delivery,
    Event,
    Failure,
    Lease,
    Message,
    MessageInfo,
    Outcome,
    Progress,
    QueueStats,
    Result,
    Slot,
    Stats,
    Take,
    WorkerInfo,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

FinalState = Literal["succeeded", "failed", "cancelled", "dead"]

#: A result with followers or joins waiting on it is kept this long even when its ttl is 0.
KEEP_FOR_DEPENDENTS = 86400.0
#: SQLite 3.35 added RETURNING, which every batched step here relies on.
MIN_SQLITE = (3, 35, 0)
SCHEMA_VERSION = 3
#: sweep() deletes at most this many rows per transaction, so it never holds the lock long.
SWEEP_CHUNK = 5000
#: Messages per enqueue transaction: a bigger batch (a bulk send) is written in several, so
#: that workers never wait long for the write lock.
ENQUEUE_CHUNK = 1000
#: publish() prunes the event log each time its seq crosses a multiple of this, down to the
#: newest EVENTS_KEPT events (so the log holds at most EVENTS_KEPT + EVENTS_PRUNE_EVERY).
EVENTS_PRUNE_EVERY = 1000

_json_encode = msgspec.json.Encoder().encode
_worker_decoder = msgspec.json.Decoder(WorkerInfo)
_progress_decoder = msgspec.json.Decoder(Progress)
_event_decoder = msgspec.json.Decoder(Event)


def _json(values: object) -> str:
    """A JSON array parameter for ``json_each`` (text: SQLite reads a blob as JSONB)."""
    return _json_encode(values).decode()


@functools.cache
def _schema() -> str:
    return (
        importlib.resources.files("pigeon.backends.sqlite")
        .joinpath("sql/schema.sql")
        .read_text(encoding="utf-8")
    )


def _path_from_url(url: str) -> str:
    """``sqlite:///rel/path.db`` -> ``rel/path.db``; ``sqlite:////abs/path.db`` -> ``/abs/...``."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not sep:
        raise ConfigError(f"not a SQLite URL: {redact(url)!r}")
    if not rest.startswith("/"):
        raise ConfigError(
            f"unsupported SQLite URL {redact(url)!r}: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db (for a store in memory, use memory://)"
        )
    path = rest[1:].split("?", 1)[0]
    if not path or path.endswith("/"):
        raise ConfigError(f"SQLite URL {redact(url)!r} names no database file")
    return path


# --- statements ---------------------------------------------------------------------------
# Parameters named ?N are bound by position. "ids" parameters are JSON arrays (see _json).

_EXISTING = """
SELECT id FROM messages WHERE id IN (SELECT value FROM json_each(?1))
UNION ALL SELECT id FROM results WHERE id IN (SELECT value FROM json_each(?1))
UNION ALL SELECT id FROM dead WHERE id IN (SELECT value FROM json_each(?1))
"""
_HELD_KEYS = """
SELECT key, id FROM keys WHERE key IN (SELECT value FROM json_each(?1)) AND expires_at > ?2
"""
_RESULT_STATES = "SELECT id, state FROM results WHERE id IN (SELECT value FROM json_each(?1))"
_INSERT_MESSAGE = """
INSERT INTO messages (id, queue, task, priority, due, state, max_deliveries, lease_len, key,
                      expires_at, result_ttl, after, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_KEY = "INSERT OR REPLACE INTO keys (key, id, expires_at) VALUES (?, ?, ?)"
_INSERT_JOIN = """
INSERT OR REPLACE INTO joins (id, mode, total, settled, succeeded, fired) VALUES (?, ?, ?, ?, ?, ?)
"""
_INSERT_MEMBER = "INSERT INTO join_members (member, join_id) VALUES (?, ?)"

# Leases that ran out: poison when this was the last delivery allowed, else due again.
_TAKE_POISON = """
DELETE FROM messages
WHERE state = 'leased' AND lease_until <= ?1 AND expiries + 1 >= max_deliveries
RETURNING id, queue, task, result_ttl, expiries + 1, body
"""
_RECLAIM_LAPSED = """
UPDATE messages SET state = 'pending', expiries = expiries + 1, due = lease_until, worker = NULL
WHERE state = 'leased' AND lease_until <= ?1
"""
_TAKE_EXPIRED = """
DELETE FROM messages WHERE state = 'pending' AND expires_at <= ?1 AND due <= ?1
RETURNING id, queue, task, result_ttl, body
"""
# The priorities a queue has pending messages at, highest first, by index seeks only. Leasing
# then seeks (queue, priority, due <= now) per priority, so scheduled messages (due later)
# are never walked over, however many there are.
_PRIORITIES = """
WITH RECURSIVE level(priority) AS (
    SELECT max(priority) FROM messages WHERE queue = ?1 AND state = 'pending'
    UNION ALL
    SELECT (SELECT max(priority) FROM messages
            WHERE queue = ?1 AND state = 'pending' AND priority < level.priority)
    FROM level WHERE level.priority IS NOT NULL)
SELECT priority FROM level WHERE priority IS NOT NULL
"""
_LEASE = """
UPDATE messages
SET state = 'leased', attempt = attempt + 1, worker = ?1,
    lease_until = ?2 + coalesce(?3, lease_len)
WHERE rowid IN (
    SELECT rowid FROM messages
    WHERE queue = ?4 AND state = 'pending' AND priority = ?5 AND due <= ?2
    ORDER BY due, id
    LIMIT ?6)
RETURNING due, id, attempt, failures, body, coalesce(?3, lease_len)
"""
_DUE_AT = """
SELECT 1 FROM messages WHERE queue = ?1 AND state = 'pending' AND priority = ?2 AND due <= ?3
"""
_LAPSED = "SELECT 1 FROM messages WHERE state = 'leased' AND lease_until <= ?1"

# Held deliveries, given as a JSON array of [id, attempt(, retry_in)].
_HELD = """
messages.id = json_extract(j.value, '$[0]')
AND messages.attempt = json_extract(j.value, '$[1]')
AND messages.state = 'leased'
"""
_EXTEND = f"""
UPDATE messages SET lease_until = ?1 + lease_len FROM json_each(?2) AS j WHERE {_HELD}
RETURNING messages.id, messages.attempt
"""
_RELEASE = f"""
UPDATE messages SET state = 'pending', due = ?1, worker = NULL FROM json_each(?2) AS j
WHERE {_HELD}
RETURNING messages.id
"""
_RETRY = f"""
UPDATE messages
SET state = 'pending', failures = failures + 1, worker = NULL,
    due = ?1 + json_extract(j.value, '$[2]')
FROM json_each(?2) AS j WHERE {_HELD}
RETURNING messages.id, messages.attempt
"""
_TAKE_HELD = """
DELETE FROM messages WHERE rowid IN (
    SELECT messages.rowid FROM json_each(?1) AS j JOIN messages
    ON messages.id = json_extract(j.value, '$[0]')
    WHERE messages.attempt = json_extract(j.value, '$[1]') AND messages.state = 'leased')
RETURNING id, attempt, queue, task, body
"""

# Finishing messages: store outcomes, release followers, count join members.
_RELEASE_FOLLOWERS = """
UPDATE messages SET state = 'pending'
WHERE state = 'waiting' AND after IN (SELECT value FROM json_each(?1))
RETURNING after
"""
_TAKE_MEMBERSHIPS = """
DELETE FROM join_members WHERE member IN (SELECT value FROM json_each(?1))
RETURNING join_id, member
"""
_COUNT_JOIN = """
UPDATE joins SET settled = settled + ?1, succeeded = succeeded + ?2 WHERE id = ?3 AND fired = 0
RETURNING mode, total, settled, succeeded
"""
_FIRE_JOIN = "UPDATE joins SET fired = 1 WHERE id = ?1"
_WAKE_JOIN = "UPDATE messages SET state = 'pending' WHERE id = ?1 AND state = 'waiting'"
# The first stored outcome of an id wins.
_STORE_RESULT = "INSERT OR IGNORE INTO results (id, state, expires_at, body) VALUES (?, ?, ?, ?)"
_STORE_DEAD = """
INSERT OR REPLACE INTO dead (id, queue, task, reason, died_at, expires_at, body)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

#: Seconds since the epoch by SQLite's clock (millisecond resolution).
# julianday() is a day count in a double (~40 µs granularity at today's dates): round
# to SQLite's own millisecond resolution so equal instants compare equal.
_NOW = "SELECT round((julianday('now') - 2440587.5) * 86400000.0) / 1000.0"
_RESULTS = """
SELECT body FROM results WHERE id IN (SELECT value FROM json_each(?1)) AND expires_at > ?2
"""
_TAKE_CANCELLABLE = """
DELETE FROM messages
WHERE id IN (SELECT value FROM json_each(?1)) AND state IN ('waiting', 'pending')
RETURNING id, queue, task, result_ttl, body
"""
_FLAG_CANCEL = """
UPDATE messages SET cancel_requested = 1
WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'leased'
"""
_CANCELLING = """
SELECT messages.id, messages.attempt FROM json_each(?1) AS j JOIN messages
ON messages.id = json_extract(j.value, '$[0]')
WHERE messages.attempt = json_extract(j.value, '$[1]') AND messages.state = 'leased'
  AND messages.cancel_requested = 1
"""
_DEAD_LETTERS = """
SELECT id, queue, task, reason, died_at, body FROM dead
WHERE ?1 IS NULL OR queue = ?1 ORDER BY died_at, id LIMIT ?2
"""
_TAKE_DEAD = """
DELETE FROM dead WHERE id IN (SELECT value FROM json_each(?1)) RETURNING id, queue, task, body
"""
_FORGET_RESULTS = "DELETE FROM results WHERE id IN (SELECT value FROM json_each(?1))"
_REQUEUE_MESSAGE = _INSERT_MESSAGE.replace("INSERT INTO", "INSERT OR IGNORE INTO")
_PURGE_DEAD = "DELETE FROM dead WHERE id IN (SELECT value FROM json_each(?1))"
_PURGE = "DELETE FROM messages WHERE queue = ?1 AND state IN ('waiting', 'pending')"

_INSPECT_MESSAGE = """
SELECT state, queue, task, attempt, failures, due, lease_until, worker, body, cancel_requested
FROM messages WHERE id = ?1
"""
_INSPECT_RESULT = "SELECT body FROM results WHERE id = ?1 AND expires_at > ?2"
_INSPECT_DEAD = "SELECT queue, task, reason, body FROM dead WHERE id = ?1"
_COUNT_MESSAGES = """
SELECT queue, state, due > ?1, count(*) FROM messages GROUP BY 1, 2, 3
"""
_COUNT_DEAD = "SELECT queue, count(*) FROM dead GROUP BY queue"
_COUNT_RESULTS = "SELECT count(*) FROM results WHERE expires_at > ?1"
_LIVE_WORKERS = "SELECT info FROM workers WHERE expires_at > ?1 ORDER BY id"
_HEARTBEAT = "INSERT OR REPLACE INTO workers (id, expires_at, info) VALUES (?1, ?2, ?3)"
_RETIRE = "DELETE FROM workers WHERE id = ?1"
_SWEEP = {
    table: f"""
    DELETE FROM {table} WHERE rowid IN (
        SELECT rowid FROM {table} WHERE {column} <= ?1 LIMIT {SWEEP_CHUNK})
    """
    for table, column in (
        ("results", "expires_at"),
        ("keys", "expires_at"),
        ("dead", "expires_at"),
        ("workers", "expires_at"),
        ("locks", "expires_at"),
        ("buckets", "tat"),  # a bucket whose tat has passed is the same as an absent one
        ("slots", "expires_at"),
        ("progress", "expires_at"),
    )
}
# Take or renew: the row changes (and comes back) only if the lock is free, lapsed or ours.
_LOCK = """
INSERT INTO locks (name, owner, expires_at) VALUES (?1, ?2, ?3 + ?4)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE locks.owner = excluded.owner OR locks.expires_at <= ?3
RETURNING owner
"""
_LOCK_HELD_BY_OTHER = "SELECT 1 FROM locks WHERE name = ?1 AND owner != ?2 AND expires_at > ?3"
_UNLOCK = "DELETE FROM locks WHERE name = ?1 AND owner = ?2"
_SWEEP_JOINS = "DELETE FROM joins WHERE id NOT IN (SELECT id FROM messages)"

# Rate limits: the tats of the buckets named (a JSON array), then the new ones.
_BUCKETS = "SELECT bucket, tat FROM buckets WHERE bucket IN (SELECT value FROM json_each(?1))"
_SET_BUCKET = """
INSERT INTO buckets (bucket, tat) VALUES (?1, ?2)
ON CONFLICT (bucket) DO UPDATE SET tat = excluded.tat
"""
# Concurrency limits: the holder keeps (renews) its unexpired place, or gets one while fewer
# than the limit (?5) are held; the row comes back iff the holder has a place after.
_ACQUIRE = """
INSERT INTO slots (name, holder, expires_at)
SELECT ?1, ?2, ?3 + ?4
WHERE EXISTS (SELECT 1 FROM slots WHERE name = ?1 AND holder = ?2 AND expires_at > ?3)
   OR (SELECT count(*) FROM slots WHERE name = ?1 AND expires_at > ?3) < ?5
ON CONFLICT (name, holder) DO UPDATE SET expires_at = excluded.expires_at
RETURNING holder
"""
# Places given as a JSON array of [name, holder].
_RELEASE_SLOTS = """
DELETE FROM slots WHERE (name, holder) IN (
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1))
"""

# Progress and events.
_REPORT = "INSERT OR REPLACE INTO progress (id, expires_at, body) VALUES (?, ?, ?)"
_PROGRESS = """
SELECT body FROM progress WHERE id IN (SELECT value FROM json_each(?1)) AND expires_at > ?2
"""
_PUBLISH = "INSERT INTO events (body) VALUES (?)"
_LAST_EVENT = "SELECT coalesce(max(seq), 0) FROM events"
_PRUNE_EVENTS = "DELETE FROM events WHERE seq <= ?1"
_READ_EVENTS = "SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
_SWEEP_MEMBERS = "DELETE FROM join_members WHERE join_id NOT IN (SELECT id FROM joins)"

# A message leaving the messages table for good:
# (id, queue, task, body, state, value, error, result_ttl)
_Done = tuple[str, str, str, bytes, FinalState, msgspec.Raw | None, Failure | None, float]


def _message_row(
    m: Message, state: str, due: float, after: str | None, body: bytes
) -> tuple[Any, ...]:
    return (
        m.id,
        m.queue,
        m.task,
        m.priority,
        due,
        state,
        m.max_deliveries,
        m.lease,
        m.key,
        m.expires_at,
        m.result_ttl,
        after,
        body,
    )


def _enqueue_rows(db: sqlite3.Connection, messages: Sequence[Message], now: float) -> list[str]:
    """Store ``messages`` through ``db``, inside whatever transaction it is in; the ids that
    stand for them. Shared by ``enqueue`` (its own transaction) and ``enqueue_in`` (the
    application's transaction)."""
    existing = {row[0] for row in db.execute(_EXISTING, (_json([m.id for m in messages]),))}
    keys = [m.key for m in messages if m.key is not None]
    held: dict[str, str] = (
        dict(db.execute(_HELD_KEYS, (_json(keys), now)).fetchall()) if keys else {}
    )
    refs = [m.after for m in messages if m.after is not None and m.join is None]
    refs.extend(member for m in messages if m.join is not None for member in m.join.members)
    outcomes: dict[str, str] = (
        dict(db.execute(_RESULT_STATES, (_json(refs),)).fetchall()) if refs else {}
    )
    ids: list[str] = []
    rows: list[tuple[Any, ...]] = []
    key_rows: list[tuple[str, str, float]] = []
    join_rows: list[tuple[str, str, int, int, int, int]] = []
    member_rows: list[tuple[str, str]] = []
    for m in messages:
        if m.key is not None:
            holder = held.get(m.key)
            if holder is not None:
                ids.append(holder)
                continue
        ids.append(m.id)
        if m.id in existing:
            continue
        existing.add(m.id)
        if m.key is not None:
            held[m.key] = m.id
            key_rows.append((m.key, m.id, now + m.result_ttl))
        state = "pending"
        after = None
        if m.join is not None:
            settled = succeeded = 0
            for member in m.join.members:
                member_state = outcomes.get(member)
                if member_state is None:
                    member_rows.append((member, m.id))
                else:
                    settled += 1
                    succeeded += member_state == "succeeded"
            total = len(m.join.members)
            fired = join_fired(m.join.mode, total, settled, succeeded)
            join_rows.append((m.id, m.join.mode, total, settled, succeeded, int(fired)))
            if not fired:
                state = "waiting"
        elif m.after is not None:
            after = m.after
            if after not in outcomes:
                state = "waiting"
        due = max(now + m.delay, m.run_at or 0.0)
        rows.append(_message_row(m, state, due, after, codec.encode_message(m)))
    db.executemany(_INSERT_MESSAGE, rows)
    if key_rows:
        db.executemany(_INSERT_KEY, key_rows)
    if join_rows:
        db.executemany(_INSERT_JOIN, join_rows)
    if member_rows:
        db.executemany(_INSERT_MEMBER, member_rows)
    return ids


class _Store:
    """The database side of :class:`SQLiteBackend`.

    Every method runs on the backend's one thread and is one transaction. The connection is
    made on first use, so it belongs to that thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._closed = False

    def call(self, job: Callable[[_Store, *Ts], T], *args: *Ts) -> T:
        """Run one method, reporting SQLite's errors as BackendError."""
        try:
            return job(self, *args)
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite database {self.path!r}: {exc}") from exc

    def open(self) -> None:
        self._connection()

    def now(self) -> float:
        """The backend clock: the database's own reading of the host clock, never the
        caller's (a process whose notion of time is off cannot move deadlines)."""
        row = self._connection().execute(_NOW).fetchone()
        return float(row[0])

    def close(self) -> None:
        self._closed = True
        if self._db is not None:
            self._db.close()
            self._db = None

    # connection and transactions ---------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            if self._closed:
                raise BackendError(f"the SQLite backend for {self.path!r} is closed")
            self._db = self._connect()
        return self._db

    def _connect(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigError(
                f"the SQLite backend needs SQLite {'.'.join(map(str, MIN_SQLITE))} or later "
                f"(for RETURNING); this Python uses {sqlite3.sqlite_version}"
            )
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise ConfigError(
                f"cannot open the SQLite database {self.path!r}: the directory {directory!r} "
                "does not exist; create it, or point the URL at an existing directory"
            )
        db = sqlite3.connect(self.path, isolation_level=None, cached_statements=512)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigError(
                    f"cannot put the SQLite database {self.path!r} in WAL mode (it stays in "
                    f"{mode!r} mode); keep it on a local file system, not a network share"
                )
            db.execute("PRAGMA synchronous = NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"the SQLite database {self.path!r} has schema version {version}, made by "
                    f"a newer pigeon (this one knows {SCHEMA_VERSION}); upgrade pigeon"
                )
            if version < SCHEMA_VERSION:
                # executescript runs the whole script; closing on failure rolls it back.
                db.executescript(f"BEGIN IMMEDIATE;\n{_schema()}\nCOMMIT;")
        except BaseException:
            db.close()
            raise
        return db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding SQLite's write lock from its first statement."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent snapshot across several statements."""
        db = self._connection()
        db.execute("BEGIN")
        try:
            yield db
        finally:
            if db.in_transaction:
                db.execute("COMMIT")

    # queue -------------------------------------------------------------------------------

    def enqueue(self, messages: Sequence[Message]) -> list[str]:
        ids: list[str] = []
        for at in range(0, len(messages), ENQUEUE_CHUNK):
            now = self.now()
            with self._write() as db:
                ids.extend(_enqueue_rows(db, messages[at : at + ENQUEUE_CHUNK], now))
        return ids

    def fetch(
        self, queues: Sequence[str], limit: int, worker: str, lease: float | None
    ) -> tuple[list[Delivery], int]:
        """Lease up to ``limit`` messages; also returns how many messages it dead-lettered."""
        now = self.now()
        length = None if lease is None else float(lease)
        deliveries: list[Delivery] = []
        with self._write() as db:
            finished = self._reclaim(db, now)
            for queue in queues:
                if len(deliveries) >= limit:
                    break
                for (priority,) in db.execute(_PRIORITIES, (queue,)).fetchall():
                    wanted = limit - len(deliveries)
                    if wanted <= 0:
                        break
                    params = (worker, now, length, queue, priority, wanted)
                    rows = db.execute(_LEASE, params).fetchall()
                    rows.sort()  # RETURNING order is unspecified: (due, id)
                    deliveries.extend(Delivery(r[1], r[2], r[3], r[4], r[5]) for r in rows)
        return deliveries, finished

    def anything_due(self, queues: Sequence[str]) -> bool:
        """Whether a fetch of ``queues`` would find work: cheap reads, no write lock."""
        db = self._connection()
        now = self.now()
        if db.execute(_LAPSED, (now,)).fetchone() is not None:
            return True
        for queue in queues:
            for (priority,) in db.execute(_PRIORITIES, (queue,)).fetchall():
                if db.execute(_DUE_AT, (queue, priority, now)).fetchone() is not None:
                    return True
        return False

    def _reclaim(self, db: sqlite3.Connection, now: float) -> int:
        """Turn lapsed leases into poison or due messages, and expired messages into dead."""
        done: list[_Done] = []
        for mid, queue, task, ttl, expiries, body in db.execute(_TAKE_POISON, (now,)).fetchall():
            reason = (
                f"poison: lease expired {expiries} times without a settle "
                "(the worker running it probably crashed)"
            )
            error = Failure("Poison", reason, id=mid)
            done.append((mid, queue, task, body, "dead", None, error, ttl))
        db.execute(_RECLAIM_LAPSED, (now,))
        for mid, queue, task, ttl, body in db.execute(_TAKE_EXPIRED, (now,)).fetchall():
            error = Failure("Expired", "the message expired before it could run", id=mid)
            done.append((mid, queue, task, body, "dead", None, error, ttl))
        if done:
            self._finish(db, done, now)
        return len(done)

    def extend(self, leases: Sequence[Lease]) -> set[str]:
        now = self.now()
        with self._write() as db:
            rows = db.execute(_EXTEND, (now, _json([(x.id, x.attempt) for x in leases])))
            held = {(mid, attempt) for mid, attempt in rows.fetchall()}
        return {x.id for x in leases if (x.id, x.attempt) not in held}

    def release(self, leases: Sequence[Lease], delay: float) -> int:
        now = self.now()
        due = now + max(delay, 0.0)
        with self._write() as db:
            rows = db.execute(_RELEASE, (due, _json([(x.id, x.attempt) for x in leases])))
            return len(rows.fetchall())

    def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        now = self.now()
        # Outcomes for one delivery after the first are refused, as if applied in order.
        first: dict[tuple[str, int], Outcome] = {}
        for o in outcomes:
            first.setdefault((o.id, o.attempt), o)
        finals = [o for o in first.values() if o.state != "retry"]
        retries = [o for o in first.values() if o.state == "retry"]
        applied: set[tuple[str, int]] = set()
        with self._write() as db:
            if finals:
                taken = db.execute(_TAKE_HELD, (_json([(o.id, o.attempt) for o in finals]),))
                done: list[_Done] = []
                for mid, attempt, queue, task, body in taken.fetchall():
                    o = first[(mid, attempt)]
                    state = cast(FinalState, o.state)
                    done.append((mid, queue, task, body, state, o.value, o.error, o.result_ttl))
                    applied.add((mid, attempt))
                if done:
                    self._finish(db, done, now)
            if retries:
                params = _json([(o.id, o.attempt, o.retry_in) for o in retries])
                applied.update(tuple(row) for row in db.execute(_RETRY, (now, params)).fetchall())
        verdicts: list[bool] = []
        for o in outcomes:
            key = (o.id, o.attempt)
            verdicts.append(key in applied and first.get(key) is o)
            if first.get(key) is o:
                del first[key]  # a duplicate of this very object later in the batch is refused
        return verdicts

    def _finish(self, db: sqlite3.Connection, done: list[_Done], now: float) -> None:
        """Settle messages for good, in the caller's transaction.

        Stores each outcome (and a dead letter for ``dead``), makes the messages waiting
        ``after`` them pending and advances the joins they are members of. The message rows
        are already deleted by the caller.
        """
        ids = _json([d[0] for d in done])
        followed = {row[0] for row in db.execute(_RELEASE_FOLLOWERS, (ids,)).fetchall()}
        memberships: list[tuple[str, str]] = db.execute(_TAKE_MEMBERSHIPS, (ids,)).fetchall()
        members = {member for _, member in memberships}
        states: dict[str, str] = {}
        results: list[tuple[str, str, float, bytes]] = []
        letters: list[tuple[str, str, str, str, float, float, bytes]] = []
        for mid, queue, task, body, state, value, error, ttl in done:
            states[mid] = state
            if state == "dead":
                reason = f"{error.type}: {error.message}" if error is not None else "dead"
                letters.append((mid, queue, task, reason, now, now + DEAD_LETTER_TTL, body))
            if ttl <= 0:
                if mid not in followed and mid not in members:
                    continue
                ttl = KEEP_FOR_DEPENDENTS
            encoded = codec.encode_result_record(Result(mid, state, value, error, now))
            results.append((mid, state, now + ttl, encoded))
        if results:
            db.executemany(_STORE_RESULT, results)
        if letters:
            db.executemany(_STORE_DEAD, letters)
        if memberships:
            self._advance_joins(db, memberships, states)

    def _advance_joins(
        self, db: sqlite3.Connection, memberships: list[tuple[str, str]], states: dict[str, str]
    ) -> None:
        counts: dict[str, list[int]] = {}
        for join_id, member in memberships:
            count = counts.setdefault(join_id, [0, 0])
            count[0] += 1
            count[1] += states[member] == "succeeded"
        for join_id, (settled, succeeded) in counts.items():
            row = db.execute(_COUNT_JOIN, (settled, succeeded, join_id)).fetchone()
            if row is not None and join_fired(*row):
                db.execute(_FIRE_JOIN, (join_id,))
                db.execute(_WAKE_JOIN, (join_id,))

    # results -----------------------------------------------------------------------------

    def results(self, ids: Collection[str]) -> dict[str, Result]:
        db = self._connection()
        rows = db.execute(_RESULTS, (_json(list(ids)), self.now())).fetchall()
        found = (codec.decode_result_record(body) for (body,) in rows)
        return {result.id: result for result in found}

    # control -----------------------------------------------------------------------------

    def cancel(self, ids: Collection[str]) -> list[str]:
        now = self.now()
        wanted = _json(list(ids))
        with self._write() as db:
            done: list[_Done] = []
            for mid, queue, task, ttl, body in db.execute(_TAKE_CANCELLABLE, (wanted,)).fetchall():
                error = Failure("Cancelled", "cancelled before it ran", id=mid)
                done.append((mid, queue, task, body, "cancelled", None, error, ttl))
            if done:
                self._finish(db, done, now)
            db.execute(_FLAG_CANCEL, (wanted,))
        cancelled = {d[0] for d in done}
        return list(dict.fromkeys(mid for mid in ids if mid in cancelled))

    def cancelling(self, leases: Sequence[Lease]) -> set[str]:
        params = (_json([(x.id, x.attempt) for x in leases]),)
        return {mid for mid, _ in self._connection().execute(_CANCELLING, params).fetchall()}

    def lock(self, name: str, owner: str, ttl: float) -> bool:
        db = self._connection()
        now = self.now()
        # Most calls come from workers that do not lead: a read says no without taking the
        # write lock that every other writer on the file would wait for.
        if db.execute(_LOCK_HELD_BY_OTHER, (name, owner, now)).fetchone() is not None:
            return False
        with self._write() as db:
            # now again: the write lock may have been waited for
            return db.execute(_LOCK, (name, owner, self.now(), ttl)).fetchone() is not None

    def unlock(self, name: str, owner: str) -> None:
        with self._write() as db:
            db.execute(_UNLOCK, (name, owner))

    def take(self, takes: Sequence[Take]) -> list[float]:
        """GCRA, one take at a time in order, all in one transaction."""
        waits: list[float] = []
        with self._write() as db:
            now = self.now()  # under the write lock: another take may have been waited for
            buckets = list(dict.fromkeys(t.bucket for t in takes))
            tats: dict[str, float] = dict(db.execute(_BUCKETS, (_json(buckets),)).fetchall())
            changed: dict[str, float] = {}
            for t in takes:
                tat = tats.get(t.bucket, now)
                wait = max(0.0, tat - (t.burst - 1) * t.interval - now)
                if wait <= t.hold:
                    tats[t.bucket] = changed[t.bucket] = max(tat, now) + t.interval
                waits.append(wait)
            if changed:
                db.executemany(_SET_BUCKET, list(changed.items()))
        return waits

    def acquire(self, slots: Sequence[Slot]) -> list[bool]:
        got: list[bool] = []
        with self._write() as db:
            now = self.now()  # under the write lock, as for take
            for slot in slots:
                params = (slot.name, slot.holder, now, float(slot.ttl), slot.limit)
                got.append(db.execute(_ACQUIRE, params).fetchone() is not None)
        return got

    def release_slots(self, slots: Sequence[Slot]) -> None:
        with self._write() as db:
            db.execute(_RELEASE_SLOTS, (_json([(x.name, x.holder) for x in slots]),))

    # progress and events -----------------------------------------------------------------

    def report(self, progress: Sequence[Progress], ttl: float) -> None:
        with self._write() as db:
            expires_at = self.now() + ttl
            db.executemany(_REPORT, [(p.id, expires_at, _json_encode(p)) for p in progress])

    def progress(self, ids: Collection[str]) -> dict[str, Progress]:
        rows = self._connection().execute(_PROGRESS, (_json(list(ids)), self.now())).fetchall()
        found: dict[str, Progress] = {}
        for (body,) in rows:
            try:
                p = _progress_decoder.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("skipping an undecodable progress report: %s", exc)
                continue
            found[p.id] = p
        return found

    def publish(self, events: Sequence[Event]) -> None:
        with self._write() as db:
            db.executemany(_PUBLISH, [(_json_encode(e),) for e in events])
            last = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
            # Prune now and then (each time the seq crosses a multiple of EVENTS_PRUNE_EVERY):
            # a range delete on the primary key, so cheap, and rare.
            if last // EVENTS_PRUNE_EVERY != (last - len(events)) // EVENTS_PRUNE_EVERY:
                db.execute(_PRUNE_EVENTS, (last - EVENTS_KEPT,))

    def read_events(self, after: int | None, limit: int) -> tuple[int, list[Event]]:
        """Up to ``limit`` events after seq ``after`` (None: the end of the log, so none)
        and the seq to read after next time."""
        db = self._connection()
        if after is None:
            return int(db.execute(_LAST_EVENT).fetchone()[0]), []
        rows = db.execute(_READ_EVENTS, (after, limit)).fetchall() if limit > 0 else []
        events: list[Event] = []
        for _, body in rows:
            try:
                events.append(_event_decoder.decode(body))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # Passed over (the cursor moves on), rather than stop every reader here.
                log.warning("skipping an undecodable event: %s", exc)
        return (int(rows[-1][0]) if rows else after), events

    def dead_letters(self, queue: str | None, limit: int) -> list[DeadLetter]:
        rows = self._connection().execute(_DEAD_LETTERS, (queue, limit)).fetchall()
        return [DeadLetter(*row) for row in rows]

    def requeue(self, ids: Collection[str]) -> int:
        now = self.now()
        with self._write() as db:
            letters = db.execute(_TAKE_DEAD, (_json(list(ids)),)).fetchall()
            if not letters:
                return 0
            db.execute(_FORGET_RESULTS, (_json([row[0] for row in letters]),))
            rows = []
            for mid, queue, task, body in letters:
                try:
                    m = codec.decode_message(body)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    # Requeued as it was: the worker that fetches it dead-letters it again,
                    # with the reason, rather than this call failing for every id.
                    m = Message(mid, task, queue)
                rows.append(_message_row(m, "pending", now, None, body))
            db.executemany(_REQUEUE_MESSAGE, rows)
        return len(letters)

    def purge_dead(self, ids: Collection[str] | None) -> int:
        with self._write() as db:
            if ids is None:
                return db.execute("DELETE FROM dead").rowcount
            return db.execute(_PURGE_DEAD, (_json(list(ids)),)).rowcount

    def purge(self, queue: str) -> int:
        with self._write() as db:
            return db.execute(_PURGE, (queue,)).rowcount

    def inspect(self, id: str) -> MessageInfo | None:
        now = self.now()
        with self._read() as db:
            row = db.execute(_INSPECT_MESSAGE, (id,)).fetchone()
            stored = db.execute(_INSPECT_RESULT, (id, now)).fetchone()
            dead = db.execute(_INSPECT_DEAD, (id,)).fetchone() if row is None else None
        result = codec.decode_result_record(stored[0]) if stored is not None else None
        if row is not None:
            state, queue, task, attempt, failures, due, lease_until, worker, body, cx = row
            if state == "pending" and due > now:
                state = "scheduled"
            return MessageInfo(
                id,
                state,
                queue=queue,
                task=task,
                attempt=attempt,
                failures=failures,
                run_at=due,
                lease_until=lease_until if state == "leased" else None,
                worker=worker,
                result=result,
                body=body,
                cancel_requested=bool(cx),
            )
        if dead is not None:
            queue, task, reason, body = dead
            return MessageInfo(
                id, "dead", queue=queue, task=task, result=result, reason=reason, body=body
            )
        if result is not None:
            return MessageInfo(id, result.state, result=result)
        return None

    def stats(self) -> Stats:
        now = self.now()
        queues: dict[str, QueueStats] = {}
        with self._read() as db:
            for queue, state, future, count in db.execute(_COUNT_MESSAGES, (now,)).fetchall():
                qs = queues.setdefault(queue, QueueStats())
                if state == "waiting":
                    qs.waiting += count
                elif state == "leased":
                    qs.leased += count
                elif future:
                    qs.scheduled += count
                else:
                    qs.pending += count
            dead = 0
            for queue, count in db.execute(_COUNT_DEAD).fetchall():
                queues.setdefault(queue, QueueStats()).dead += count
                dead += count
            results = db.execute(_COUNT_RESULTS, (now,)).fetchone()[0]
            infos = db.execute(_LIVE_WORKERS, (now,)).fetchall()
        workers = [_worker_decoder.decode(info) for (info,) in infos]
        return Stats(queues, results, dead, workers)

    def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        now = self.now()
        body = _json_encode(msgspec.structs.replace(info, last_seen=now))
        with self._write() as db:
            db.execute(_HEARTBEAT, (info.id, now + ttl, body))

    def retire(self, worker: str) -> None:
        with self._write() as db:
            db.execute(_RETIRE, (worker,))

    def sweep(self) -> int:
        now = self.now()
        removed = 0
        for statement in _SWEEP.values():
            while True:
                with self._write() as db:
                    count = db.execute(statement, (now,)).rowcount
                removed += count
                if count < SWEEP_CHUNK:
                    break
        with self._write() as db:
            db.execute(_SWEEP_JOINS)
            db.execute(_SWEEP_MEMBERS)
        return removed


class SQLiteBackend:
    """The Backend contract on one SQLite file (see the module docstring for the how).

    Made from ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``; the file
    and its tables are created on first use, its directory must exist. Methods called before
    ``open()`` open the backend themselves; after ``close()`` the next call opens it again.
    """

    def __init__(self, url: str) -> None:
        self.url = redact(url)
        self.path = _path_from_url(url)
        self._poller = Poller()
        self._worker: tuple[_Store, concurrent.futures.ThreadPoolExecutor] | None = None

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.url!r})"

    def _thread(self) -> tuple[_Store, concurrent.futures.ThreadPoolExecutor]:
        """The store and the one thread it runs on, made on first use."""
        if self._worker is None:
            executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="pigeon-sqlite"
            )
            self._worker = (_Store(self.path), executor)
        return self._worker

    async def _run(self, job: Callable[[_Store, *Ts], T], *args: *Ts) -> T:
        store, executor = self._thread()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, store.call, job, *args)

    async def _nap(self, idle_since: float, remaining: float) -> None:
        """Sleep one polling interval (never past ``remaining``), or until kicked."""
        try:
            async with asyncio.timeout(remaining):
                await self._poller.sleep(idle_since)
        except TimeoutError:
            pass

    # lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the database, creating the file and its tables when missing. Idempotent.

        Raises ConfigError when the directory does not exist, the SQLite library is older
        than 3.35, or the file cannot be put in WAL mode.
        """
        await self._run(_Store.open)

    async def close(self) -> None:
        """Close the connection and stop the thread. Calls already made finish first."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        store, executor = worker
        try:
            await asyncio.get_running_loop().run_in_executor(executor, store.close)
        finally:
            executor.shutdown(wait=True)

    async def time(self) -> float:
        """The backend clock: SQLite's reading of this host's clock."""
        return await self._run(_Store.now)

    # queue -------------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[Message]) -> list[str]:
        """Store ``messages`` durably (a transaction per ``ENQUEUE_CHUNK``) and return the id
        standing for each.

        That is its own id, or the id of the message that holds its ``key``. An id that is
        already stored (as a message, a result or a dead letter) is not stored again.
        """
        if not messages:
            return []
        ids = await self._run(_Store.enqueue, list(messages))
        self._poller.kick()
        return ids

    def enqueue_in_sync(
        self, connection: sqlite3.Connection, messages: Sequence[Message]
    ) -> list[str]:
        """Store ``messages`` through the application's own ``sqlite3`` connection to this
        database, inside its transaction: they exist only if the application commits.
        Runs on the calling thread (where the connection belongs); it does not commit."""
        if not messages:
            return []
        if not connection.in_transaction:
            connection.execute("BEGIN IMMEDIATE")  # the sends and the caller's writes as one
        now = float(connection.execute(_NOW).fetchone()[0])
        try:
            return _enqueue_rows(connection, messages, now)
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite database {self.path!r}: {exc}") from exc

    async def enqueue_in(self, connection: Any, messages: Sequence[Message]) -> list[str]:
        """``enqueue_in_sync`` for async code (the connection is still a ``sqlite3`` one)."""
        return self.enqueue_in_sync(connection, messages)

    async def fetch(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        lease: float | None = None,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """Lease up to ``limit`` due messages from ``queues``, in the order given.

        Within a queue: highest priority, then earliest due time, then id. Each fetch first
        dead-letters poison messages (leases that ran out ``max_deliveries`` times) and
        expired ones. Two fetches, in any processes, never lease the same message. When
        nothing is due, polls for up to ``wait`` seconds before returning ``[]``. If the
        caller is cancelled while a lease is being taken, the messages taken are released.
        """
        if limit <= 0:
            return []
        queues = list(queues)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        idle_since = time.monotonic()
        deliveries = await self._lease(queues, limit, worker, lease)
        while not deliveries:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await self._nap(idle_since, remaining)
            if await self._run(_Store.anything_due, queues):
                deliveries = await self._lease(queues, limit, worker, lease)
        return deliveries

    async def _lease(
        self, queues: list[str], limit: int, worker: str, lease: float | None
    ) -> list[Delivery]:
        store, executor = self._thread()
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(executor, store.call, _Store.fetch, queues, limit, worker, lease)
        try:
            deliveries, finished = await asyncio.shield(job)
        except asyncio.CancelledError:
            # The transaction may commit after our caller has gone: hand the leases back
            # on the same thread rather than let them run out and count as lost deliveries.
            job.add_done_callback(functools.partial(_release_orphans, store, executor))
            raise
        if finished:
            self._poller.kick()  # poison or expired results were stored: wake waiters
        return deliveries

    async def extend(self, leases: Sequence[Lease]) -> set[str]:
        """Push each held lease to now + the message's lease; return the ids no longer held."""
        if not leases:
            return set()
        return await self._run(_Store.extend, list(leases))

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply each outcome, all in one transaction; per outcome, whether it was applied.

        An outcome applies only while its message is leased as ``outcome.attempt``. A final
        outcome stores the result (kept ``KEEP_FOR_DEPENDENTS`` seconds even with a ttl of 0
        when follow-ups or joins wait on it; the first stored outcome of an id wins), stores
        a dead letter for ``dead``, removes the message, makes its followers pending and
        advances its joins. ``retry`` makes it due ``retry_in`` seconds from now with one more
        failure counted.
        """
        if not outcomes:
            return []
        applied = await self._run(_Store.settle, list(outcomes))
        self._poller.kick()
        return applied

    async def release(self, leases: Sequence[Lease], delay: float = 0.0) -> int:
        """Make held messages due again ``delay`` seconds from now (at once by default),
        without counting a failure or a lost lease; returns how many were released."""
        if not leases:
            return 0
        count = await self._run(_Store.release, list(leases), float(delay))
        if count:
            self._poller.kick()
        return count

    # results -----------------------------------------------------------------------------

    async def results(self, ids: Collection[str]) -> dict[str, Result]:
        """The stored, unexpired outcomes among ``ids``."""
        if not ids:
            return {}
        return await self._run(_Store.results, list(ids))

    async def wait(self, ids: Collection[str], timeout: float) -> dict[str, Result]:
        """Every outcome among ``ids`` as soon as there is at least one; ``{}`` on timeout.

        Polls adaptively; a settle through this object wakes the wait at once.
        """
        ids = list(ids)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        idle_since = time.monotonic()
        while True:
            found = await self.results(ids)
            remaining = deadline - loop.time()
            if found or remaining <= 0:
                return found
            await self._nap(idle_since, remaining)

    # control -----------------------------------------------------------------------------

    async def cancel(self, ids: Collection[str]) -> list[str]:
        """Settle each waiting, scheduled or pending message as ``cancelled``.

        Returns the ids cancelled, in the order given. A leased message keeps running with its
        ``cancel_requested`` flag set, which ``cancelling`` reports to the worker holding it
        (until the message settles); a settled or unknown one is left alone.
        """
        if not ids:
            return []
        cancelled = await self._run(_Store.cancel, list(ids))
        if cancelled:
            self._poller.kick()
        return cancelled

    async def cancelling(self, leases: Sequence[Lease]) -> set[str]:
        """The ids among ``leases``, still held as that attempt, whose cancel was requested.

        One read, no write lock, however many leases.
        """
        if not leases:
            return set()
        return await self._run(_Store.cancelling, list(leases))

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters (of ``queue``, or of every queue), oldest first."""
        return await self._run(_Store.dead_letters, queue, limit)

    async def requeue(self, ids: Collection[str]) -> int:
        """Move dead letters back to pending with fresh counts and forget their outcomes.

        Returns how many were requeued; ids without a dead letter are ignored.
        """
        if not ids:
            return 0
        count = await self._run(_Store.requeue, list(ids))
        if count:
            self._poller.kick()
        return count

    async def purge_dead(self, ids: Collection[str] | None = None) -> int:
        """Delete the dead letters ``ids`` (all when None); returns how many."""
        if ids is not None and not ids:
            return 0
        return await self._run(_Store.purge_dead, None if ids is None else list(ids))

    async def purge(self, queue: str) -> int:
        """Delete the waiting, scheduled and pending messages of ``queue``; returns how many."""
        return await self._run(_Store.purge, queue)

    async def inspect(self, id: str) -> MessageInfo | None:
        """All that is known of one id (message, stored outcome, dead letter), or None."""
        return await self._run(_Store.inspect, id)

    async def stats(self) -> Stats:
        """Messages by queue and state, unexpired outcomes, dead letters, live workers."""
        return await self._run(_Store.stats)

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        """Record ``info`` as a live worker for ``ttl`` seconds (``last_seen`` = now)."""
        await self._run(_Store.heartbeat, info, ttl)

    async def retire(self, worker: str) -> None:
        """Remove a worker's record."""
        await self._run(_Store.retire, worker)

    async def sweep(self) -> int:
        """Delete expired results, keys, dead letters, worker records, locks, rate-limit
        buckets (tat passed), concurrency places and progress reports; return how many.

        Deletes in transactions of at most ``SWEEP_CHUNK`` rows so that workers are never
        held up for long. Also drops the counters of joins whose message is gone.
        """
        return await self._run(_Store.sweep)

    # coordination ------------------------------------------------------------------------

    async def lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the lock ``name`` for ``owner`` for ``ttl`` seconds; True iff
        ``owner`` holds it now. Refused (False, nothing written) while another owner's lock
        has not expired."""
        if ttl <= 0:
            raise ValueError(f"a lock's ttl must be > 0 seconds, not {ttl}")
        return await self._run(_Store.lock, name, owner, float(ttl))

    async def unlock(self, name: str, owner: str) -> None:
        """Free the lock ``name`` at once if ``owner`` holds it."""
        await self._run(_Store.unlock, name, owner)

    async def take(self, takes: Sequence[Take]) -> list[float]:
        """Start slots from rate-limit buckets (GCRA), one take at a time in order, in one
        transaction; per take, the seconds from now until its slot (reserved iff it is
        within the take's ``hold``)."""
        if not takes:
            return []
        return await self._run(_Store.take, list(takes))

    async def acquire(self, slots: Sequence[Slot]) -> list[bool]:
        """Take or renew a place of each concurrency limit for its holder, in order, in one
        transaction; per slot, whether the holder has a place now."""
        if not slots:
            return []
        return await self._run(_Store.acquire, list(slots))

    async def release_slots(self, slots: Sequence[Slot]) -> None:
        """Give the holders' places back at once (unknown ones are left alone)."""
        if slots:
            await self._run(_Store.release_slots, list(slots))

    # progress and events -----------------------------------------------------------------

    async def report(self, progress: Sequence[Progress], ttl: float) -> None:
        """Store each report as the latest of its message, kept ``ttl`` seconds."""
        if progress:
            await self._run(_Store.report, list(progress), float(ttl))

    async def progress(self, ids: Collection[str]) -> dict[str, Progress]:
        """The stored, unexpired latest reports among ``ids``."""
        if not ids:
            return {}
        return await self._run(_Store.progress, list(ids))

    async def publish(self, events: Sequence[Event]) -> None:
        """Append ``events`` to the shared log, in order, in one transaction."""
        if not events:
            return
        await self._run(_Store.publish, list(events))
        self._poller.kick()

    async def read_events(
        self, after: str | None, limit: int = 1000, wait: float = 0.0
    ) -> tuple[str, list[Event]]:
        """Up to ``limit`` events published after the cursor ``after`` (None: the end of
        the log), oldest first, and the cursor to pass next time.

        When there is none yet, polls for up to ``wait`` seconds; a publish through this
        object wakes the reader at once.
        """
        try:
            start = None if after is None else int(after)
        except ValueError:
            raise ValueError(f"not an event cursor of this backend: {after!r}") from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        idle_since = time.monotonic()
        cursor, events = await self._run(_Store.read_events, start, limit)
        while not events and limit > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await self._nap(idle_since, remaining)
            cursor, events = await self._run(_Store.read_events, cursor, limit)
        return str(cursor), events


def _release_orphans(
    store: _Store,
    executor: concurrent.futures.ThreadPoolExecutor,
    job: asyncio.Future[tuple[list[Delivery], int]],
) -> None:
    """Release what a cancelled fetch leased after its caller stopped waiting."""
    if job.cancelled() or job.exception() is not None:
        return
    leases = [Lease(d.id, d.attempt) for d in job.result()[0]]
    if not leases:
        return
    try:
        release = executor.submit(store.call, _Store.release, leases, 0.0)
    except RuntimeError as exc:  # the backend was closed meanwhile
        _log_orphans(leases, exc)
        return

    def report(done: concurrent.futures.Future[int]) -> None:
        exc = done.exception()
        if exc is not None:
            _log_orphans(leases, exc)

    release.add_done_callback(report)


def _log_orphans(leases: list[Lease], exc: BaseException) -> None:
    log.warning(
        "could not release %d messages leased by a cancelled fetch (%s): %s; they will be "
        "fetched again when their lease runs out",
        len(leases),
        ", ".join(x.id for x in leases),
        exc,
    )
