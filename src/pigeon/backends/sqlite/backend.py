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
import functools
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar, TypeVarTuple

from pigeon.backends.base import MessagePage, MessageQuery, Poller, redact
from pigeon.backends.shared import check_pause, log_orphans, orphaned_leases
from pigeon.backends.sqlite.rows import enqueue_rows, queries
from pigeon.backends.sqlite.store import Store
from pigeon.errors import BackendError, ConfigError
from pigeon.message import (
    DeadLetter,
    Delivery,
    Event,
    Lease,
    Message,
    MessageInfo,
    Outcome,
    Pause,
    Progress,
    Result,
    Slot,
    Stats,
    Take,
    WorkerInfo,
)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


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
        self._worker: tuple[Store, concurrent.futures.ThreadPoolExecutor] | None = None

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.url!r})"

    def _thread(self) -> tuple[Store, concurrent.futures.ThreadPoolExecutor]:
        """The store and the one thread it runs on, made on first use."""
        if self._worker is None:
            executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="pigeon-sqlite"
            )
            self._worker = (Store(self.path), executor)
        return self._worker

    async def _run(self, job: Callable[[Store, *Ts], T], *args: *Ts) -> T:
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
        await self._run(Store.open)

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
        return await self._run(Store.now)

    # queue -------------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[Message]) -> list[str]:
        """Store ``messages`` durably (a transaction per ``ENQUEUE_CHUNK``) and return the id
        standing for each.

        That is its own id, or the id of the message that holds its ``key``. An id that is
        already stored (as a message, a result or a dead letter) is not stored again.
        """
        if not messages:
            return []
        ids = await self._run(Store.enqueue, list(messages))
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
        now = float(connection.execute(queries()["now"]).fetchone()[0])
        try:
            return enqueue_rows(connection, messages, now)
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
            if await self._run(Store.anything_due, queues):
                deliveries = await self._lease(queues, limit, worker, lease)
        return deliveries

    async def _lease(
        self, queues: list[str], limit: int, worker: str, lease: float | None
    ) -> list[Delivery]:
        store, executor = self._thread()
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(executor, store.call, Store.fetch, queues, limit, worker, lease)
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
        return await self._run(Store.extend, list(leases))

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
        applied = await self._run(Store.settle, list(outcomes))
        self._poller.kick()
        return applied

    async def release(self, leases: Sequence[Lease], delay: float = 0.0) -> int:
        """Make held messages due again ``delay`` seconds from now (at once by default),
        without counting a failure or a lost lease; returns how many were released."""
        if not leases:
            return 0
        count = await self._run(Store.release, list(leases), float(delay))
        if count:
            self._poller.kick()
        return count

    # results -----------------------------------------------------------------------------

    async def results(self, ids: Collection[str]) -> dict[str, Result]:
        """The stored, unexpired outcomes among ``ids``."""
        if not ids:
            return {}
        return await self._run(Store.results, list(ids))

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
        cancelled = await self._run(Store.cancel, list(ids))
        if cancelled:
            self._poller.kick()
        return cancelled

    async def cancelling(self, leases: Sequence[Lease]) -> set[str]:
        """The ids among ``leases``, still held as that attempt, whose cancel was requested.

        One read, no write lock, however many leases.
        """
        if not leases:
            return set()
        return await self._run(Store.cancelling, list(leases))

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters (of ``queue``, or of every queue), oldest first."""
        return await self._run(Store.dead_letters, queue, limit)

    async def requeue(self, ids: Collection[str]) -> int:
        """Move dead letters back to pending with fresh counts and forget their outcomes.

        Returns how many were requeued; ids without a dead letter are ignored.
        """
        if not ids:
            return 0
        count = await self._run(Store.requeue, list(ids))
        if count:
            self._poller.kick()
        return count

    async def purge_dead(self, ids: Collection[str] | None = None) -> int:
        """Delete the dead letters ``ids`` (all when None); returns how many."""
        if ids is not None and not ids:
            return 0
        return await self._run(Store.purge_dead, None if ids is None else list(ids))

    async def purge(self, queue: str) -> int:
        """Delete the waiting, scheduled and pending messages of ``queue``; returns how many."""
        return await self._run(Store.purge, queue)

    async def inspect(self, id: str) -> MessageInfo | None:
        """All that is known of one id (message, stored outcome, dead letter), or None."""
        return await self._run(Store.inspect, id)

    async def stats(self) -> Stats:
        """Messages by queue and state, unexpired outcomes, dead letters, live workers."""
        return await self._run(Store.stats)

    async def pause(
        self, queue: str, reason: str | None = None, until: float | None = None
    ) -> Pause:
        """Stop fetches from leasing ``queue``'s messages, until ``resume`` or ``until``
        (epoch seconds, this host's clock); renewing a pause keeps its since."""
        check_pause(queue, until)
        return await self._run(Store.pause, queue, reason, None if until is None else float(until))

    async def resume(self, queue: str) -> bool:
        """End ``queue``'s pause; whether it was paused. Fetches polling here look at once;
        those of other processes see it at their next poll."""
        check_pause(queue, None)
        was = await self._run(Store.resume, queue)
        self._poller.kick()
        return was

    async def paused(self) -> dict[str, Pause]:
        """The live pauses, by queue."""
        return await self._run(Store.paused)

    async def list_messages(self, query: MessageQuery) -> MessagePage:
        """See ``base.Backend``; the indexes walked are in ``sqlite/listing.py``."""
        return await self._run(Store.list_messages, query)

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        """Record ``info`` as a live worker for ``ttl`` seconds (``last_seen`` = now)."""
        await self._run(Store.heartbeat, info, ttl)

    async def retire(self, worker: str) -> None:
        """Remove a worker's record."""
        await self._run(Store.retire, worker)

    async def sweep(self) -> int:
        """Delete expired results, keys, dead letters, worker records, locks, rate-limit
        buckets (tat passed), concurrency places and progress reports; return how many.

        Deletes in transactions of at most ``SWEEP_CHUNK`` rows so that workers are never
        held up for long. Also drops the counters of joins whose message is gone.
        """
        return await self._run(Store.sweep)

    # coordination ------------------------------------------------------------------------

    async def lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the lock ``name`` for ``owner`` for ``ttl`` seconds; True iff
        ``owner`` holds it now. Refused (False, nothing written) while another owner's lock
        has not expired."""
        if ttl <= 0:
            raise ValueError(f"a lock's ttl must be > 0 seconds, not {ttl}")
        return await self._run(Store.lock, name, owner, float(ttl))

    async def unlock(self, name: str, owner: str) -> None:
        """Free the lock ``name`` at once if ``owner`` holds it."""
        await self._run(Store.unlock, name, owner)

    async def schedules(self, names: Collection[str]) -> dict[str, float]:
        """The stored marks (ticks sent up to) among the schedules ``names``; one read."""
        if not names:
            return {}
        return await self._run(Store.schedules, list(names))

    async def mark_schedules(self, marks: Mapping[str, float]) -> None:
        """Raise each schedule's mark to the one given (never lower it); one statement."""
        if marks:
            await self._run(Store.mark_schedules, dict(marks))

    async def take(self, takes: Sequence[Take]) -> list[float]:
        """Start slots from rate-limit buckets (GCRA), one take at a time in order, in one
        transaction; per take, the seconds from now until its slot (reserved iff it is
        within the take's ``hold``)."""
        if not takes:
            return []
        return await self._run(Store.take, list(takes))

    async def acquire(self, slots: Sequence[Slot]) -> list[bool]:
        """Take or renew a place of each concurrency limit for its holder, in order, in one
        transaction; per slot, whether the holder has a place now."""
        if not slots:
            return []
        return await self._run(Store.acquire, list(slots))

    async def release_slots(self, slots: Sequence[Slot]) -> None:
        """Give the holders' places back at once (unknown ones are left alone)."""
        if slots:
            await self._run(Store.release_slots, list(slots))

    # progress and events -----------------------------------------------------------------

    async def report(self, progress: Sequence[Progress], ttl: float) -> None:
        """Store each report as the latest of its message, kept ``ttl`` seconds."""
        if progress:
            await self._run(Store.report, list(progress), float(ttl))

    async def progress(self, ids: Collection[str]) -> dict[str, Progress]:
        """The stored, unexpired latest reports among ``ids``."""
        if not ids:
            return {}
        return await self._run(Store.progress, list(ids))

    async def publish(self, events: Sequence[Event]) -> None:
        """Append ``events`` to the shared log, in order, in one transaction."""
        if not events:
            return
        await self._run(Store.publish, list(events))
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
        cursor, events = await self._run(Store.read_events, start, limit)
        while not events and limit > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await self._nap(idle_since, remaining)
            cursor, events = await self._run(Store.read_events, cursor, limit)
        return str(cursor), events


def _release_orphans(
    store: Store,
    executor: concurrent.futures.ThreadPoolExecutor,
    job: asyncio.Future[tuple[list[Delivery], int]],
) -> None:
    """Release what a cancelled fetch leased after its caller stopped waiting."""
    leases = orphaned_leases(job, lambda r: [Lease(d.id, d.attempt) for d in r[0]])
    if not leases:
        return
    try:
        release = executor.submit(store.call, Store.release, leases, 0.0)
    except RuntimeError as exc:  # the backend was closed meanwhile
        log_orphans(leases, exc)
        return

    def report(done: concurrent.futures.Future[int]) -> None:
        exc = done.exception()
        if exc is not None:
            log_orphans(leases, exc)

    release.add_done_callback(report)
