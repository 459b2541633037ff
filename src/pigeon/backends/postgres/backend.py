"""The PostgreSQL backend's contract methods (see :mod:`pigeon.backends.postgres` for how
it keeps the contract of :mod:`pigeon.backends.base`).

The connections come from :class:`~pigeon.backends.postgres.session.Connections`, the
schema from :mod:`~pigeon.backends.postgres.schema`, the enqueue paths from
:mod:`~pigeon.backends.postgres.enqueue` and the settling of messages from
:mod:`~pigeon.backends.postgres.settling`, and what the reads make of their rows from
:mod:`~pigeon.backends.postgres.decoding`; what is left here is each operation's statement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any, cast

import msgspec

from pigeon.aio import shielded
from pigeon.backends.base import SWEEP_CHUNK, plain_options
from pigeon.backends.postgres import decoding, settling
from pigeon.backends.postgres import enqueue as enqueuing
from pigeon.backends.postgres import schema as schemas
from pigeon.backends.postgres.coordination import Coordination
from pigeon.backends.postgres.listener import DB_ERRORS, POLL_WHILE_DEAF, Waker, stored_result
from pigeon.backends.postgres.listing import Listing
from pigeon.backends.postgres.psycopg_connection import (
    Psycopg,
    SyncPsycopg,
    is_async_psycopg,
    is_psycopg,
    run_sync,
)
from pigeon.backends.postgres.session import close_session
from pigeon.backends.shared import check_pause, orphaned_leases, release_orphans, until_passed
from pigeon.errors import ConfigError
from pigeon.message import (
    DeadLetter,
    Delivery,
    Lease,
    Message,
    MessageInfo,
    Outcome,
    Pause,
    Result,
    Stats,
    WorkerInfo,
)

#: Fewest seconds a fetch sleeps when the next due message is "now" but held by others.
MIN_NAP = 0.002

_json_encode = msgspec.json.Encoder().encode


class PostgresBackend(Listing, Coordination):
    """The Backend contract on PostgreSQL (see the package docstring for the how).

    Methods called before ``open()`` open the backend themselves; after ``close()`` the next
    call opens it again. A backend used from a new event loop (its old one closed) reconnects.
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        # queues -> (listener.news, loop time of the next due) of the last look that drained them
        self._drained: dict[tuple[str, ...], tuple[tuple[int, ...], float]] = {}

    def __repr__(self) -> str:
        return f"PostgresBackend({self.url!r})"

    # lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, and bring the schema up to date unless the URL says ``migrate=false``.

        Raises ConfigError when the schema is behind and may not be migrated (run ``pigeon
        migrate``) or was made by a newer pigeon; BackendError when PostgreSQL cannot be
        reached.
        """
        await self._ready()

    async def close(self) -> None:
        """Close the listener and the pool. Calls in flight finish first (up to 10 s)."""
        session, self._session = self._session, None
        if session is not None:
            await close_session(session)

    async def time(self) -> float:
        """The backend clock: the database server's ``clock_timestamp()``."""
        async with self._connection() as conn:
            return cast(float, await conn.fetchval(self._sql["clock"]))

    async def migrate(self, target: int | None = None) -> list[str]:
        """Apply the schema migrations this database lacks (up to ``target``), in order.

        One transaction under an advisory lock: safe when many processes start at once, and
        all or nothing. Returns the names of the migrations applied (empty when up to date).
        Raises ConfigError when the schema was made by a newer pigeon.
        """
        return await self._apart(lambda conn: schemas.migrate(conn, self.schema, self.url, target))

    async def schema_version(self) -> int:
        """The schema version of the database (0: no pigeon schema there yet)."""
        return await self._apart(lambda conn: schemas.version_of(conn, self.schema))

    # queue -------------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[Message]) -> list[str]:
        """Store ``messages`` durably and return the id standing for each.

        That is its own id, or the id of the message that holds its ``key``. An id that is
        already stored (as a message, an outcome or a dead letter) is not stored again. A
        batch without keys, follow-ups or joins is one statement (or, when it is plain and
        big, one ``executemany``); otherwise one transaction.
        """
        if not messages:
            return []
        batch = list(messages)
        # Messages without a key stand for themselves, and are new: a settle of theirs can
        # only come after this enqueue, and is heard if the listener hears settles now.
        listener = (await self._ready()).listener
        mine = [m.id for m in batch if m.key is None] if listener is not None else []
        tracked = listener is not None and listener.track(mine)
        try:
            shared = plain_options(batch)
            if shared is not None:
                async with self._connection() as conn:
                    await enqueuing.insert_plain(conn, self._sql, batch, shared, self.url, own=True)
                return [m.id for m in batch]
            if any(m.key is not None or m.after is not None or m.join is not None for m in batch):
                async with self._transaction() as conn:
                    return await enqueuing.enqueue(conn, self._sql, batch, self.url)
            async with self._connection() as conn:
                return await enqueuing.enqueue(conn, self._sql, batch, self.url)
        except BaseException:
            if tracked and listener is not None:
                listener.untrack(mine)
            raise

    async def enqueue_in(self, connection: Any, messages: Sequence[Message]) -> list[str]:
        """Store ``messages`` through the application's own ``connection``: asyncpg's, or
        psycopg 3's (an ``AsyncConnection``, or a sync ``Connection``, used blocking).

        Inside the connection's transaction they become visible (and wake workers) only
        when it commits, and vanish if it rolls back; without a transaction they are
        stored in one of their own. Returns the id standing for each message, as
        ``enqueue``. The schema must exist (``open()`` or ``pigeon migrate``). This does not
        use the backend's pool, so it runs on whatever event loop the connection is on.
        """
        if not messages:
            return []
        batch = list(messages)
        if is_psycopg(connection):
            if not is_async_psycopg(connection):
                return self.enqueue_in_sync(connection, batch)
            adapted = Psycopg(connection)
            if adapted.is_in_transaction():
                return await enqueuing.enqueue(adapted, self._sql, batch, self.url)
            async with adapted.transaction():
                return await enqueuing.enqueue(adapted, self._sql, batch, self.url)
        try:
            if connection.is_in_transaction():
                return await enqueuing.enqueue(connection, self._sql, batch, self.url)
            async with connection.transaction():
                return await enqueuing.enqueue(connection, self._sql, batch, self.url)
        except DB_ERRORS as exc:
            raise self._error(exc) from None

    def enqueue_in_sync(self, connection: Any, messages: Sequence[Message]) -> list[str]:
        """``enqueue_in`` through a sync psycopg 3 ``Connection`` (``with
        app.transaction(conn):``, Django's connection), on the calling thread: inside its
        transaction (or with autocommit off) the caller commits; otherwise they are stored
        in a transaction of their own. Raises ConfigError for any other connection."""
        if not is_psycopg(connection) or is_async_psycopg(connection):
            raise ConfigError(
                "a sync transactional enqueue on PostgreSQL needs a psycopg 3 Connection, not"
                f" {type(connection).__module__}.{type(connection).__name__} (for asyncpg or"
                " psycopg's AsyncConnection, use `async with app.transaction(conn)`)"
            )
        if not messages:
            return []
        batch = list(messages)
        adapted = SyncPsycopg(connection)
        if adapted.is_in_transaction():
            return run_sync(enqueuing.enqueue(adapted, self._sql, batch, self.url))
        with adapted.transaction():
            return run_sync(enqueuing.enqueue(adapted, self._sql, batch, self.url))

    async def fetch(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        lease: float | None = None,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """Lease up to ``limit`` due messages from ``queues``, in the order given.

        Within a queue: highest priority, then earliest due time, then id. Lapsed leases
        are reclaimed first (poison ones dead-lettered) and expired messages dead-lettered.
        When nothing is due, sleeps until a NOTIFY says one of ``queues`` has work, or until
        the next due time, for up to ``wait`` seconds. If the caller is cancelled while a
        lease is being taken, the messages taken are released.
        """
        if limit <= 0:
            return []
        queues = list(queues)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        if wait <= 0:
            return (await self._lease(queues, limit, worker, lease))[0]
        listener = await self._listening("work")
        key = tuple(queues)
        while True:
            waker = Waker(listener.work, queues)  # before looking: no wake-up is missed
            try:
                # After a look that drained these queues, nothing can be due before the time
                # that look reported unless a NOTIFY announced work since it began: then
                # skip the statement (a worker fetches again as soon as it starts a task).
                news = listener.news(queues)
                drained = self._drained.get(key)
                if drained is not None and drained[0] == news and loop.time() < drained[1]:
                    deliveries: list[Delivery] = []
                    due_at = drained[1]
                else:
                    deliveries, next_in = await self._lease(queues, limit, worker, lease)
                    due_at = loop.time() + (next_in if next_in is not None else 3600.0)
                    if len(deliveries) < limit and listener.up:
                        self._drained[key] = (news, due_at)
                    else:
                        self._drained.pop(key, None)
                remaining = deadline - loop.time()
                if deliveries or remaining <= 0:
                    return deliveries
                nap = min(remaining, max(due_at - loop.time(), MIN_NAP))
                if not listener.up:
                    nap = min(nap, POLL_WHILE_DEAF)
                await waker.sleep(nap)
            finally:
                waker.close()

    async def _lease(
        self, queues: list[str], limit: int, worker: str, lease: float | None
    ) -> tuple[list[Delivery], float | None]:
        def orphaned(job: asyncio.Task[tuple[list[Delivery], float | None]]) -> None:
            # The statement may commit after our caller has gone: hand the leases back
            # rather than let them run out and count as lost deliveries.
            job.add_done_callback(self._release_orphans)

        return await shielded(self._lease_now(queues, limit, worker, lease), orphaned)

    async def _lease_now(
        self, queues: list[str], limit: int, worker: str, lease: float | None
    ) -> tuple[list[Delivery], float | None]:
        length = None if lease is None else float(lease)
        sql = self._sql["lease"]
        async with self._connection() as conn:
            found = await conn.fetch(sql, queues, limit, worker, length, True)
            leased, flags = decoding.split(found)
            if flags["lapsed"] or flags["expired"]:
                await settling.reclaim(conn, self._sql)
                room = limit - len(leased)
                if room > 0:
                    more, flags = decoding.split(
                        await conn.fetch(sql, queues, room, worker, length, False)
                    )
                    leased.extend(more)
        if leased:
            self._count_leases(len(leased))
        return decoding.deliveries(leased), flags["next_in"]

    def _release_orphans(self, job: asyncio.Future[tuple[list[Delivery], float | None]]) -> None:
        leases = orphaned_leases(job, lambda r: [Lease(d.id, d.attempt) for d in r[0]])
        if leases and self._session is not None:
            self._session.spawn(release_orphans(self.release, leases))

    async def extend(self, leases: Sequence[Lease]) -> set[str]:
        """Push each held lease to now + the message's lease; return the ids no longer held."""
        if not leases:
            return set()
        async with self._connection() as conn:
            rows = await conn.fetch(
                self._sql["extend"], [x.id for x in leases], [x.attempt for x in leases]
            )
        held = {(r[0], r[1]) for r in rows}
        return {x.id for x in leases if (x.id, x.attempt) not in held}

    async def release(self, leases: Sequence[Lease], delay: float = 0.0) -> int:
        """Make held messages due again ``delay`` seconds from now (database clock; at once
        by default), without counting a failure or a lost lease; returns how many."""
        if not leases:
            return 0
        async with self._connection() as conn:
            row = await conn.fetchrow(
                self._sql["release"],
                [x.id for x in leases],
                [x.attempt for x in leases],
                max(float(delay), 0.0),
            )
        return cast(int, row[0])

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply each outcome, all in one transaction; per outcome, whether it was applied.

        One call of the schema's ``settle`` function (one round trip). An outcome applies
        only while its message is leased as ``outcome.attempt``. A final
        outcome stores the result (kept ``KEEP_FOR_DEPENDENTS`` seconds even with a ttl of 0
        when follow-ups or joins wait on it; the first stored outcome of an id wins), stores
        a dead letter for ``dead``, removes the message, makes its followers pending and
        advances its joins. ``retry`` makes it due ``retry_in`` seconds from now with one more
        failure counted.
        """
        if not outcomes:
            return []
        async with self._connection() as conn:
            return await settling.settle(conn, self._sql, outcomes)

    # results -----------------------------------------------------------------------------

    async def results(self, ids: Collection[str]) -> dict[str, Result]:
        """The stored, unexpired outcomes among ``ids``."""
        if not ids:
            return {}
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["results"], list(ids))
        found = (stored_result(r[0], r[1]) for r in rows)
        return {result.id: result for result in found}

    async def wait(self, ids: Collection[str], timeout: float) -> dict[str, Result]:
        """Every outcome among ``ids`` as soon as there is at least one; ``{}`` on timeout.

        Woken by the NOTIFY of the settle that stores one; while the listening connection
        is down it polls.
        """
        wanted = list(dict.fromkeys(ids))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        listener = await self._listening("done")
        first = True
        try:
            while True:
                waker = Waker(listener.done, wanted)  # before looking: no wake-up is missed
                try:
                    # The first look skips what this object stored and will hear of
                    # (pigeon.backends.tracking). Shielded: a waiter interrupted while the
                    # query runs (a promise joining the wait) must not cancel it, which
                    # costs a reconnection.
                    unknown: list[str] = wanted
                    found: dict[str, Result] = {}
                    if first:
                        first = False
                        found, unknown = listener.unheard(wanted)
                    if unknown:
                        found.update(await shielded(self.results(unknown)))
                    remaining = deadline - loop.time()
                    if found or remaining <= 0:
                        return found
                    await waker.sleep(remaining if listener.up else min(remaining, POLL_WHILE_DEAF))
                finally:
                    waker.close()
                # Outcomes that came with their notification need no query.
                news = {mid: listener.pushed.pop(mid) for mid in wanted if mid in listener.pushed}
                pushed = {mid: r for mid, r in news.items() if r is not None}
                if pushed and len(pushed) == len(news):
                    return pushed
        finally:
            for mid in wanted:
                listener.pushed.pop(mid, None)

    # control -----------------------------------------------------------------------------

    async def cancel(self, ids: Collection[str]) -> list[str]:
        """Settle each waiting, scheduled or pending message as ``cancelled``.

        Returns the ids cancelled, in the order given. A leased message is marked instead:
        its holder learns of it through ``cancelling``. A settled or unknown id is left alone.
        """
        if not ids:
            return []
        wanted = list(dict.fromkeys(ids))
        async with self._transaction() as conn:
            cancelled = await settling.cancel(conn, self._sql, wanted)
        return [mid for mid in wanted if mid in cancelled]

    async def cancelling(self, leases: Sequence[Lease]) -> set[str]:
        """The ids among ``leases``, held as that attempt, whose cancellation was requested.

        One read, whatever the number of leases; it changes nothing.
        """
        if not leases:
            return set()
        async with self._connection() as conn:
            rows = await conn.fetch(
                self._sql["cancelling"], [x.id for x in leases], [x.attempt for x in leases]
            )
        return {r[0] for r in rows}

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters (of ``queue``, or of every queue), oldest first."""
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["dead_letters"], queue, limit)
        return [DeadLetter(*r) for r in rows]

    async def requeue(self, ids: Collection[str]) -> int:
        """Move dead letters back to pending with fresh counts and forget their outcomes.

        Returns how many were requeued; ids without a dead letter are ignored.
        """
        if not ids:
            return 0
        async with self._transaction() as conn:
            letters = await conn.fetch(self._sql["take_dead"], list(ids))
            if not letters:
                return 0
            await enqueuing.requeue(conn, self._sql, letters)
        return len(letters)

    async def purge_dead(self, ids: Collection[str] | None = None) -> int:
        """Delete the dead letters ``ids`` (all when None); returns how many."""
        if ids is not None and not ids:
            return 0
        async with self._connection() as conn:
            if ids is None:
                return cast(int, await conn.fetchval(self._sql["purge_all_dead"]))
            return cast(int, await conn.fetchval(self._sql["purge_dead"], list(ids)))

    async def purge(self, queue: str) -> int:
        """Delete the waiting, scheduled and pending messages of ``queue``; returns how many."""
        async with self._connection() as conn:
            return cast(int, await conn.fetchval(self._sql["purge"], queue))

    async def inspect(self, id: str) -> MessageInfo | None:
        """All that is known of one id (message, stored outcome, dead letter), or None."""
        async with self._connection() as conn:
            r = await conn.fetchrow(self._sql["inspect"], id)
        return decoding.message_info(id, r)

    async def stats(self) -> Stats:
        """Messages by queue and state, unexpired outcomes, dead letters, live workers and
        the live pauses."""
        async with self._connection() as conn:
            found = await conn.fetch(self._sql["stats"])
            paused = await conn.fetch(self._sql["paused"])
        return decoding.stats(found, paused)

    async def pause(
        self, queue: str, reason: str | None = None, until: float | None = None
    ) -> Pause:
        """Stop fetches from leasing ``queue``'s messages, until ``resume`` or ``until``
        (database clock); renewing a pause keeps its since. One row of ``pauses``, which
        the fetch statement reads."""
        check_pause(queue, until)
        at = None if until is None else float(until)
        async with self._connection() as conn:
            row = await conn.fetchrow(self._sql["pause"], queue, reason, at)
        if row[0] is None:
            raise until_passed(queue, float(until or 0.0), row[4])
        return decoding.pause(row)

    async def resume(self, queue: str) -> bool:
        """End ``queue``'s pause and NOTIFY the fetches sleeping on it; whether it was
        paused."""
        check_pause(queue, None)
        async with self._connection() as conn:
            row = await conn.fetchrow(self._sql["resume"], queue)
        return bool(row[0])

    async def paused(self) -> dict[str, Pause]:
        """The live pauses, by queue."""
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["paused"])
        return decoding.pauses(rows)

    # workers and sweeping --------------------------------------------------------------

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        """Record ``info`` as a live worker for ``ttl`` seconds (``last_seen`` = now)."""
        async with self._connection() as conn:
            await conn.execute(self._sql["heartbeat"], info.id, float(ttl), _json_encode(info))

    async def retire(self, worker: str) -> None:
        """Remove a worker's record."""
        async with self._connection() as conn:
            await conn.execute(self._sql["retire"], worker)

    async def sweep(self) -> int:
        """Delete expired results, keys, dead letters, worker records, locks, rate-limit
        buckets, concurrency-limit places and progress reports; returns how many.

        Deletes at most ``SWEEP_CHUNK`` rows per statement so that no lock is held for long.
        Also drops the counters of joins whose message is gone.
        """
        removed = 0
        async with self._connection() as conn:
            for name in (
                "sweep_results",
                "sweep_keys",
                "sweep_dead",
                "sweep_workers",
                "sweep_locks",
                "sweep_buckets",
                "sweep_places",
                "sweep_progress",
            ):
                while True:
                    count = cast(int, await conn.fetchval(self._sql[name], SWEEP_CHUNK))
                    removed += count
                    if count < SWEEP_CHUNK:
                        break
            while await conn.fetchval(self._sql["sweep_joins"], SWEEP_CHUNK) >= SWEEP_CHUNK:
                pass
        return removed
