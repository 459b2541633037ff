"""The NATS backend's coordination and observation operations: locks, the scheduler's
marks, rate buckets (GCRA), concurrency places, progress reports and the event log (a base
class of ``backend.NatsBackend``).

Each lock, mark, bucket and limit is one record, changed by compare-and-set on the
sequence the view read (two owners racing for a lock: one write is refused, and its step,
run again on the refreshed view, sees the winner). Progress reports are records with a
TTL; every event is a record of its own (``S.e.<id>``, ``records.EVENT_TTL``) whose
stream sequence is its cursor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial

from pigeon.backends.nats import records as r
from pigeon.backends.nats.batch import Write
from pigeon.backends.nats.core import Core
from pigeon.backends.nats.writes import commit
from pigeon.message import Event, Progress, Slot, Take, new_id


class Coordination(Core):
    """Locks, schedule marks, rate buckets, concurrency places, progress and events."""

    async def lock(self, name: str, owner: str, ttl: float) -> bool:
        if ttl <= 0:
            raise ValueError(f"a lock's ttl must be > 0 seconds, not {ttl}")
        now = await self._fresh()
        subject = self.subjects.named("l", name)
        got = False

        def step() -> list[Write] | None:
            nonlocal got
            held = self.view.locks.get(name)
            got = held is None or held.owner == owner or held.until <= now
            if not got:
                return None
            return [self._write(subject, r.encode(r.LockRecord(owner, now + ttl)))]

        await self._step(step, subject)
        return got

    async def unlock(self, name: str, owner: str) -> None:
        await self._fresh()

        def step() -> list[Write] | None:
            held = self.view.locks.get(name)
            if held is None or held.owner != owner:
                return None
            return [self._delete(self.subjects.named("l", name))]

        await self._step(step)

    async def schedules(self, names: Collection[str]) -> dict[str, float]:
        await self._fresh()
        marks = self.view.marks
        return {n: marks[n] for n in names if n in marks}

    async def mark_schedules(self, marks: Mapping[str, float]) -> None:
        await self._fresh()

        def step_of(name: str, mark: float) -> Callable[[], list[Write] | None]:
            def step() -> list[Write] | None:
                stored = self.view.marks.get(name)
                if stored is not None and stored >= mark:
                    return None
                subject = self.subjects.named("c", name)
                return [self._write(subject, r.encode(r.Mark(float(mark))))]

            return step

        await self._each([partial(self._step, step_of(n, m), f"c.{n}") for n, m in marks.items()])

    async def take(self, takes: Sequence[Take]) -> list[float]:
        now = await self._fresh()
        waits: list[float] = []
        for t in takes:  # in order: two takes of one bucket see each other
            wait = 0.0

            def step(t: Take = t) -> list[Write] | None:
                nonlocal wait
                bucket = self.view.buckets.get(t.bucket)
                tat = bucket.tat if bucket is not None else now
                wait = max(0.0, tat - (t.burst - 1) * t.interval - now)
                if wait > t.hold:
                    return None
                subject = self.subjects.named("b", t.bucket)
                return [self._write(subject, r.encode(r.Bucket(max(tat, now) + t.interval)))]

            await self._step(step, f"b.{t.bucket}")
            waits.append(wait)
        return waits

    async def acquire(self, slots: Sequence[Slot]) -> list[bool]:
        now = await self._fresh()
        got: list[bool] = []
        for slot in slots:
            placed = False

            def step(slot: Slot = slot) -> list[Write] | None:
                nonlocal placed
                held = self.view.places.get(slot.name)
                holders = {h: u for h, u in (held.holders if held else {}).items() if u > now}
                placed = slot.holder in holders or len(holders) < slot.limit
                if not placed:
                    return None
                holders[slot.holder] = now + slot.ttl
                subject = self.subjects.named("s", slot.name)
                return [self._write(subject, r.encode(r.Places(holders)))]

            await self._step(step, f"s.{slot.name}")
            got.append(placed)
        return got

    async def release_slots(self, slots: Sequence[Slot]) -> None:
        await self._fresh()
        for slot in slots:

            def step(slot: Slot = slot) -> list[Write] | None:
                held = self.view.places.get(slot.name)
                if held is None or slot.holder not in held.holders:
                    return None
                holders = {h: u for h, u in held.holders.items() if h != slot.holder}
                subject = self.subjects.named("s", slot.name)
                return [self._write(subject, r.encode(r.Places(holders)))]

            await self._step(step, f"s.{slot.name}")

    # progress and events -----------------------------------------------------------------

    async def report(self, progress: Sequence[Progress], ttl: float) -> None:
        if not progress:
            return
        now = await self._now()
        writes = [
            Write(
                self.subjects.named("g", p.id),
                r.encode(r.ProgressRecord(p, now + ttl)),
                None,
                r.ttl_header(ttl),
            )
            for p in progress
        ]
        seqs = await self._each([partial(commit, self.nc, [w]) for w in writes])
        await self.view.reached(max(seqs))

    async def progress(self, ids: Collection[str]) -> dict[str, Progress]:
        now = await self._fresh()
        held = self.view.progress
        return {i: p.progress for i in ids if (p := held.get(i)) is not None and p.until > now}

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        ttl = r.ttl_header(r.EVENT_TTL)
        for event in events:  # in order: the log is ordered by stream sequence
            subject = self.subjects.named("e", new_id())
            seq = await commit(self.nc, [Write(subject, r.encode(r.EventRecord(event)), None, ttl)])
        await self.view.reached(seq)

    async def read_events(
        self, after: str | None, limit: int = 1000, wait: float = 0.0
    ) -> tuple[str, list[Event]]:
        await self._fresh()
        view = self.view
        start = view.last if after is None else int(after)
        deadline = time.monotonic() + wait
        while True:
            found = [(seq, e) for seq, e in view.events if seq > start][:limit]
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                cursor = found[-1][0] if found else start
                return str(cursor), [e for _, e in found]
            await view.wait_change(remaining)
