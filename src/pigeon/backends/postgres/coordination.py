"""The PostgreSQL backend's coordination and observation operations: locks, the
scheduler's marks, rate buckets (GCRA), concurrency places, progress reports and the event
log (see :mod:`pigeon.backends.postgres` for how each is stored).

The base of :class:`pigeon.backends.postgres.backend.PostgresBackend`, split off so that each
file reads in one sitting; it uses only the connections of
:class:`~pigeon.backends.postgres.session.Connections`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from typing import cast

import msgspec

from pigeon.aio import shielded
from pigeon.backends.base import EVENTS_KEPT
from pigeon.backends.postgres import decoding
from pigeon.backends.postgres.listener import EVENTS, POLL_WHILE_DEAF, Waker
from pigeon.backends.postgres.session import Connections
from pigeon.backends.shared import EVENTS_PRUNE_EVERY
from pigeon.message import Event, Progress, Slot, Take

_json_encode = msgspec.json.Encoder().encode


class Coordination(Connections):
    """Locks, schedule marks, rate buckets, concurrency places, progress and events."""

    # coordination ----------------------------------------------------------------------

    async def lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the lock ``name`` for ``owner`` until now + ``ttl`` seconds (database
        clock); whether ``owner`` holds it afterwards. Two concurrent calls never both win."""
        if ttl <= 0:
            raise ValueError(f"a lock's ttl must be > 0 seconds, not {ttl}")
        async with self._connection() as conn:
            holder = await conn.fetchval(self._sql["lock"], name, owner, float(ttl))
        return holder is not None

    async def unlock(self, name: str, owner: str) -> None:
        """Free the lock ``name`` at once if ``owner`` holds it (expired or not)."""
        async with self._connection() as conn:
            await conn.execute(self._sql["unlock"], name, owner)

    async def schedules(self, names: Collection[str]) -> dict[str, float]:
        """The stored marks (ticks sent up to) among the schedules ``names``; one query."""
        if not names:
            return {}
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["schedules"], list(names))
        return {row[0]: float(row[1]) for row in rows}

    async def mark_schedules(self, marks: Mapping[str, float]) -> None:
        """Raise each schedule's mark to the one given (never lower it); one statement."""
        if not marks:
            return
        async with self._connection() as conn:
            await conn.execute(
                self._sql["mark_schedules"], list(marks), [float(m) for m in marks.values()]
            )

    async def take(self, takes: Sequence[Take]) -> list[float]:
        """Start slots from token buckets (GCRA), one take at a time in the order given: per
        take, the seconds from now (database clock) until its slot, reserved when that is
        at most its ``hold``. One call of the schema's ``take()`` function."""
        if not takes:
            return []
        async with self._connection() as conn:
            waits = await conn.fetchval(
                self._sql["take"],
                [t.bucket for t in takes],
                [float(t.interval) for t in takes],
                [t.burst for t in takes],
                [float(t.hold) for t in takes],
            )
        return [float(w) for w in waits]

    async def acquire(self, slots: Sequence[Slot]) -> list[bool]:
        """Take or renew a place of each limit ``slot.name`` for ``slot.holder`` until now +
        ``slot.ttl``, one slot at a time in the order given; per slot, whether the holder
        has a place afterwards. Concurrent acquirers never exceed a limit."""
        if not slots:
            return []
        async with self._connection() as conn:
            got = await conn.fetchval(
                self._sql["acquire"],
                [x.name for x in slots],
                [x.holder for x in slots],
                [x.limit for x in slots],
                [float(x.ttl) for x in slots],
            )
        return [bool(g) for g in got]

    async def release_slots(self, slots: Sequence[Slot]) -> None:
        """Give the holders' places back at once (an unknown one is left alone)."""
        if not slots:
            return
        async with self._connection() as conn:
            await conn.execute(
                self._sql["release_slots"], [x.name for x in slots], [x.holder for x in slots]
            )

    # progress and events -----------------------------------------------------------------

    async def report(self, progress: Sequence[Progress], ttl: float) -> None:
        """Store each report as the latest of its message id, kept ``ttl`` seconds."""
        latest = {p.id: p for p in progress}  # the last report of an id in the batch wins
        if not latest:
            return
        async with self._connection() as conn:
            await conn.execute(
                self._sql["report"],
                list(latest),
                [_json_encode(p) for p in latest.values()],
                float(ttl),
            )

    async def progress(self, ids: Collection[str]) -> dict[str, Progress]:
        """The stored, unexpired latest reports among ``ids``."""
        if not ids:
            return {}
        async with self._connection() as conn:
            found = await conn.fetch(self._sql["progress"], list(ids))
        return decoding.progress(found, self.url)

    async def publish(self, events: Sequence[Event]) -> None:
        """Append ``events`` to the shared log in the order given and wake its readers.

        One call of the schema's ``publish()`` function (see the module docstring)."""
        if not events:
            return
        async with self._connection() as conn:
            await conn.fetchval(
                self._sql["publish"],
                [_json_encode(e) for e in events],
                EVENTS_KEPT,
                EVENTS_PRUNE_EVERY,
            )

    async def read_events(
        self, after: str | None, limit: int = 1000, wait: float = 0.0
    ) -> tuple[str, list[Event]]:
        """Up to ``limit`` events published after the cursor ``after`` (None: the end of the
        log), oldest first, and the cursor to pass next time.

        When there is none yet, sleeps until a NOTIFY says one was published, for up to
        ``wait`` seconds (polling while the listening connection is down).
        """
        if after is None:
            async with self._connection() as conn:
                start = cast(int, await conn.fetchval(self._sql["events_end"]))
        else:
            try:
                start = int(after)
            except ValueError:
                raise ValueError(f"not an event cursor: {after!r}") from None
        if limit <= 0 or (after is None and wait <= 0):
            return str(start), []
        if wait <= 0:
            return await self._read_events(start, limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        listener = await self._listening("events")
        while True:
            waker = Waker(listener.events, (EVENTS,))  # before looking: no wake-up is missed
            try:
                # Shielded, as in wait(): a cancelled reader must not cancel the query.
                cursor, found = await shielded(self._read_events(start, limit))
                remaining = deadline - loop.time()
                if found or remaining <= 0:
                    return cursor, found
                if int(cursor) != start:  # only undecodable events: look past them
                    start = int(cursor)
                    continue
                await waker.sleep(remaining if listener.up else min(remaining, POLL_WHILE_DEAF))
            finally:
                waker.close()

    async def _read_events(self, start: int, limit: int) -> tuple[str, list[Event]]:
        async with self._connection() as conn:
            found = await conn.fetch(self._sql["read_events"], start, limit)
        return decoding.events(found, start, self.url)
