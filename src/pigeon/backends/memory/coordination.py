"""The memory backend's coordination and observation operations: locks, the scheduler's
marks, rate buckets (GCRA), concurrency places, progress reports and the event log, with
the change notification that wakes waiting fetches, waits and event readers.

A mixin of :class:`pigeon.backends.memory.backend.MemoryBackend`, split off so that each
file reads in one sitting: it owns the state it keeps, made by its ``__init__``. Like the
rest of the backend, every operation runs without awaiting in between, so it is atomic.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence

from pigeon.backends.base import EVENTS_KEPT
from pigeon.message import Event, Progress, Slot, Take


class Coordination:
    """Locks, schedule marks, rate buckets, concurrency places, progress and events."""

    #: The backend's clock (``time.time`` unless it was given another: ``pigeon.clock``).
    _now: Callable[[], float] = staticmethod(time.time)

    def __init__(self) -> None:
        self._locks: dict[str, tuple[str, float]] = {}
        self._marks: dict[str, float] = {}  # schedule name -> ticks sent up to
        self._buckets: dict[str, tuple[float, float]] = {}  # bucket -> (tat, tat)
        self._slots: dict[str, dict[str, float]] = {}  # name -> holder -> expiry
        self._progress: dict[str, tuple[Progress, float]] = {}
        self._events: deque[tuple[int, Event]] = deque(maxlen=EVENTS_KEPT)
        self._event_seq = 0
        self._changed: asyncio.Event | None = None
        self._changed_loop: asyncio.AbstractEventLoop | None = None

    # change notification -------------------------------------------------------------

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_change(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        if self._changed is None or self._changed_loop is not loop:
            # One Event per loop: the store may outlive the loop it was first used on.
            self._changed = asyncio.Event()
            self._changed_loop = loop
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            pass

    # coordination ----------------------------------------------------------------------

    async def lock(self, name: str, owner: str, ttl: float) -> bool:
        if ttl <= 0:
            raise ValueError(f"a lock's ttl must be > 0 seconds, not {ttl}")
        now = self._now()
        held = self._locks.get(name)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self._locks[name] = (owner, now + ttl)
        return True

    async def unlock(self, name: str, owner: str) -> None:
        held = self._locks.get(name)
        if held is not None and held[0] == owner:
            del self._locks[name]

    async def schedules(self, names: Collection[str]) -> dict[str, float]:
        return {name: self._marks[name] for name in names if name in self._marks}

    async def mark_schedules(self, marks: Mapping[str, float]) -> None:
        for name, mark in marks.items():
            self._marks[name] = max(self._marks.get(name, mark), float(mark))

    async def take(self, takes: Sequence[Take]) -> list[float]:
        now = self._now()
        waits: list[float] = []
        for t in takes:
            tat = self._buckets.get(t.bucket, (now, now))[0]
            wait = max(0.0, tat - (t.burst - 1) * t.interval - now)
            if wait <= t.hold:
                until = max(tat, now) + t.interval
                self._buckets[t.bucket] = (until, until)
            waits.append(wait)
        return waits

    async def acquire(self, slots: Sequence[Slot]) -> list[bool]:
        now = self._now()
        got: list[bool] = []
        for slot in slots:
            holders = self._slots.setdefault(slot.name, {})
            live = {h for h, until in holders.items() if until > now}
            if slot.holder in live or len(live) < slot.limit:
                holders[slot.holder] = now + slot.ttl
                got.append(True)
            else:
                got.append(False)
        return got

    async def release_slots(self, slots: Sequence[Slot]) -> None:
        for slot in slots:
            holders = self._slots.get(slot.name)
            if holders is not None:
                holders.pop(slot.holder, None)

    # progress and events -----------------------------------------------------------------

    async def report(self, progress: Sequence[Progress], ttl: float) -> None:
        now = self._now()
        for p in progress:
            self._progress[p.id] = (p, now + ttl)

    async def progress(self, ids: Collection[str]) -> dict[str, Progress]:
        now = self._now()
        found: dict[str, Progress] = {}
        for mid in ids:
            stored = self._progress.get(mid)
            if stored is not None and stored[1] > now:
                found[mid] = stored[0]
        return found

    async def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            self._event_seq += 1
            self._events.append((self._event_seq, event))
        if events:
            self._notify()

    async def read_events(
        self, after: str | None, limit: int = 1000, wait: float = 0.0
    ) -> tuple[str, list[Event]]:
        start = self._event_seq if after is None else int(after)
        deadline = time.monotonic() + wait
        while True:
            found = [(seq, e) for seq, e in self._events if seq > start][:limit]
            if found or time.monotonic() >= deadline:
                cursor = found[-1][0] if found else start
                return str(cursor), [e for _, e in found]
            await self._wait_change(deadline - time.monotonic())
