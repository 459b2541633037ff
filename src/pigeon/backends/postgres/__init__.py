"""``postgresql://``: PostgreSQL through asyncpg, pushed wake-ups and transactional enqueue.

How it keeps the contract of :mod:`pigeon.backends.base`:

- URL: ``postgresql://user[:password]@host[:port]/db?schema=NAME`` (default schema
  ``pigeon``: every table lives there). ``migrate=false`` forbids creating or upgrading the
  schema on first use; other query parameters (``sslmode``, ...) go to asyncpg.
- Schema: versioned migrations (``sql/NNNN_*.sql``) recorded in
  ``schema_version``, applied by :meth:`PostgresBackend.migrate` (``pigeon migrate``) in one
  transaction under an advisory lock, so that many processes may start at once. ``open()``
  applies the missing ones unless the URL says ``migrate=false``.
- Connections: a pool (1 to ``POOL_MAX``) runs the operations; every statement is in
  ``sql/queries.sql``, prepared once per connection (``session.SESSION_SETTINGS`` says how
  they are planned), with batches passed as arrays. One more connection per backend object
  LISTENs (:mod:`pigeon.backends.postgres.listener`), opened on first need.
- fetch leases a batch in one statement: ``FOR NO KEY UPDATE SKIP LOCKED`` over the fetch
  index, so concurrent fetchers neither wait for nor share a message. Lapsed leases, poison
  and expired messages are handled in a transaction of their own when that statement
  reports some.
- settle is one call of the schema's ``settle()`` function (PL/pgSQL: one round trip per
  batch, and each of its statements sees what committed before it). Enqueueing a follow-up
  or a join marks the messages it depends on (``dependents``), which holds them: a
  concurrent settle of one waits for it, then finds it. Messages without dependants are
  settled by one statement.
- Notifications: enqueue, release, retry and released follow-ups NOTIFY ``<schema>.work``
  with the queue name, so ``fetch(wait=...)`` sleeps until one of its queues has work (or
  until the next due time the last look reported); settle, cancel and poison NOTIFY
  ``<schema>.done`` with the ids (and the outcomes that fit), so ``wait`` wakes at once,
  usually without a query. NOTIFY is transactional: nobody is woken for work that is rolled
  back. When the listening connection is lost, waiters poll until it is back, then all
  re-check (a notification may have been missed).
- Rate limits: ``take`` is one call of the schema's ``take()`` function, which locks the
  batch's buckets (rows of ``buckets``, in name order) and then reads the clock, so callers
  of a bucket are served one after the other. Concurrency limits: ``acquire`` is one call
  of ``acquire()``, which serializes each limit name with a transaction-level advisory lock
  before counting its unexpired ``places``.
- Progress: the latest report of each id, upserted into ``progress`` with its expiry.
- Events: one ``events`` table with a ``bigserial`` seq (a reader's cursor). ``publish()``
  takes a transaction-level advisory lock before drawing seqs, so publishes are serialized
  and seqs become visible in order (a reader never skips one committed late); it NOTIFYs
  ``<schema>.events``, which wakes sleeping readers. Every ``EVENTS_PRUNE_EVERY`` events
  it deletes all but the newest ``EVENTS_KEPT``.
- Clock: the database's (``now()``, or ``clock_timestamp()`` read once the rows or locks an
  operation waits for are held), never this host's.
- Enqueue: a batch of messages without keys or links that share their options (a bulk
  send) is ``insert_new`` per ``PLAIN_CHUNK``, pipelined by ``executemany``: ids and bodies
  are its only arrays, and it skips ``ON CONFLICT`` (falling back to ``insert_plain`` when
  an id turns out to be a message already). Other batches are one ``insert_messages``.
  Every insert ends with ``settled_since`` (an id settled while it was being stored again
  is undone: see ``enqueue.py``).
- Transactional enqueue: :meth:`PostgresBackend.enqueue_in` writes messages through the
  application's own asyncpg connection, inside its transaction (``App.transaction``).

Settled messages leave the ``messages`` table at once; outcomes, keys, dead letters, worker
records, locks, buckets, places and progress reports expire and are deleted by ``sweep()``
in bounded batches; the hot table
is vacuumed every ``VACUUM_EVERY`` leases (``_count_leases`` says why). Passwords never
appear in errors: asyncpg's errors are re-raised as BackendError with the URL redacted.
"""

from pigeon.backends.postgres.backend import PostgresBackend
from pigeon.backends.postgres.schema import Migration, latest_version, migrations
from pigeon.backends.postgres.session import VACUUM_EVERY

__all__ = ["VACUUM_EVERY", "Migration", "PostgresBackend", "latest_version", "migrations"]
