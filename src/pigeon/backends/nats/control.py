"""The NATS backend's control operations: dead letters, requeue, purges, inspect, stats,
worker records, sweep and pauses (a base class of ``backend.NatsBackend``)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from functools import partial

import msgspec

from pigeon.backends.base import MessagePage, MessageQuery
from pigeon.backends.info import StoredDead, StoredMessage, message_info
from pigeon.backends.nats import records as r
from pigeon.backends.nats.batch import Write
from pigeon.backends.nats.core import Core
from pigeon.backends.nats.listing import list_view
from pigeon.backends.nats.writes import publish_one
from pigeon.backends.shared import Tally, check_pause, expiry, until_passed
from pigeon.codec import decode_message
from pigeon.message import DeadLetter, MessageInfo, Pause, Stats, WorkerInfo

Step = Callable[[], list[Write] | None]


def _constant(write: Write) -> list[Write]:
    return [write]


class Control(Core):
    """Dead letters, purges, inspect, stats, workers, sweep, pauses."""

    # dead letters ------------------------------------------------------------------------

    def _dead(self, now: float) -> list[r.Record]:
        return [
            rec
            for rec in self.view.records.values()
            if rec.state == "dead" and rec.dead_until > now
        ]

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        now = await self._fresh()
        letters = [
            DeadLetter(rec.id, rec.queue, rec.task, rec.reason, rec.died_at, rec.body)
            for rec in self._dead(now)
            if queue is None or rec.queue == queue
        ]
        letters.sort(key=lambda d: (d.died_at, d.id))
        return letters[:limit]

    async def _count(self, steps: Sequence[Step]) -> int:
        """Run ``steps`` (each a step for ``_step``) and count the ones that wrote."""
        done = await self._each([partial(self._step, s) for s in steps])
        return sum(seq is not None for seq in done)

    async def requeue(self, ids: Collection[str]) -> int:
        now = await self._fresh()

        def step_of(id: str) -> Step:
            def step() -> list[Write] | None:
                rec = self.view.records.get(id)
                if rec is None or rec.state != "dead" or rec.dead_until <= now:
                    return None
                m = decode_message(rec.body)
                fresh = r.Record(
                    id=id, queue=m.queue, task=m.task, state="pending", body=rec.body,
                    priority=m.priority, due=now, lease=m.lease,
                    max_deliveries=m.max_deliveries, expires_at=expiry(m, now),
                    result_ttl=m.result_ttl, sent_at=now, key=m.key,
                )  # fmt: skip
                return [self._record(fresh)]  # its outcome is forgotten with the tombstone

            return step

        count = await self._count([step_of(i) for i in dict.fromkeys(ids)])
        self.view.changed()
        return count

    async def purge_dead(self, ids: Collection[str] | None = None) -> int:
        now = await self._fresh()
        targets = [rec.id for rec in self._dead(now)] if ids is None else list(dict.fromkeys(ids))

        def step_of(id: str) -> Step:
            def step() -> list[Write] | None:
                rec = self.view.records.get(id)
                if rec is None or rec.state != "dead" or rec.dead_until <= now:
                    return None
                kept = self.view.kept.get(id)
                if kept is None or kept.until <= now:
                    return [self._delete(self.subjects.message(id))]
                done = msgspec.structs.replace(
                    rec, state="done", body=b"", dead_until=0.0, until=kept.until
                )
                return [self._record(done, r.ttl_header(kept.until - now))]

            return step

        return await self._count([step_of(i) for i in targets])

    async def purge(self, queue: str) -> int:
        await self._fresh()
        targets = [
            rec.id
            for rec in self.view.records.values()
            if rec.queue == queue and rec.state in ("waiting", "pending")
        ]

        def step_of(id: str) -> Step:
            def step() -> list[Write] | None:
                rec = self.view.records.get(id)
                if rec is None or rec.state not in ("waiting", "pending"):
                    return None
                return [self._delete(self.subjects.message(id))]

            return step

        return await self._count([step_of(i) for i in targets])

    # reading -----------------------------------------------------------------------------

    async def inspect(self, id: str) -> MessageInfo | None:
        now = await self._fresh()
        view = self.view
        rec = view.records.get(id)
        kept = view.kept.get(id)
        result = kept.result if kept is not None and kept.until > now else None
        message = dead = None
        if rec is not None and rec.state in r.LIVE:
            message = StoredMessage(
                rec.state, rec.queue, rec.task, rec.attempt, rec.failures, rec.due,
                rec.lease_until, rec.worker, rec.body, rec.cancel, rec.sent_at,
            )  # fmt: skip
        elif rec is not None and rec.state == "dead" and rec.dead_until > now:
            dead = StoredDead(rec.queue, rec.task, rec.reason, rec.body)
        return message_info(id, now, message, result, dead)

    async def stats(self) -> Stats:
        now = await self._fresh()
        view = self.view
        tally = Tally()
        for rec in view.records.values():
            if rec.state in r.LIVE:
                tally.message(rec.queue, rec.state, rec.due > now)
            elif rec.state == "dead" and rec.dead_until > now:
                tally.dead_letters(rec.queue)
        results = sum(1 for k in view.kept.values() if k.until > now)
        workers = (w.info for w in view.workers.values() if w.until > now)
        return tally.stats(results, workers, self._live_pauses(now))

    async def list_messages(self, query: MessageQuery) -> MessagePage:
        return list_view(query, await self._fresh(), self.view)

    # workers -----------------------------------------------------------------------------

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        now = await self._now()
        record = r.WorkerRecord(msgspec.structs.replace(info, last_seen=now), now + ttl)
        subject = self.subjects.named("w", info.id)
        seq = await publish_one(self.nc, subject, r.encode(record), None, r.ttl_header(ttl))
        await self.view.reached(seq)

    async def retire(self, worker: str) -> None:
        subject = self.subjects.named("w", worker)
        seq = await publish_one(self.nc, subject, b"", None, r.DELETE_TTL)
        await self.view.reached(seq)

    async def sweep(self) -> int:
        """Outcomes, keys, workers, progress and tombstones go from the server by their own
        TTL; this drops them from the view, deletes expired locks, buckets and places (kept
        without a TTL), and counts what it removed."""
        now = await self._fresh()
        view = self.view
        count = 0
        for store in (view.kept, view.keys, view.workers, view.progress):
            gone = [k for k, v in store.items() if v.until <= now]
            for k in gone:
                del store[k]
            count += len(gone)
        tombs = [i for i, rec in view.records.items() if rec.state not in r.LIVE]
        for id in tombs:
            rec = view.records[id]
            if rec.state == "dead" and rec.dead_until <= now:
                count += 1
                if rec.until <= now:
                    del view.records[id]
            elif rec.until <= now:
                del view.records[id]
        deletes = [self.subjects.named("l", n) for n, lk in view.locks.items() if lk.until <= now]
        deletes += [self.subjects.named("b", n) for n, b in view.buckets.items() if b.tat <= now]
        for name, places in view.places.items():
            if places.holders and all(until <= now for until in places.holders.values()):
                deletes.append(self.subjects.named("s", name))
        if deletes:
            count += await self._count([partial(_constant, self._delete(s)) for s in deletes])
        view.prune()
        return count

    # pauses ------------------------------------------------------------------------------

    def _live_pauses(self, now: float) -> dict[str, Pause]:
        held = self.view.pauses
        return {
            q: p.pause
            for q, p in sorted(held.items())
            if p.pause.until is None or p.pause.until > now
        }

    async def pause(
        self, queue: str, reason: str | None = None, until: float | None = None
    ) -> Pause:
        check_pause(queue, until)
        now = await self._fresh()
        if until is not None and until <= now:
            raise until_passed(queue, until, now)
        made: list[Pause] = []

        def step() -> list[Write] | None:
            held = self.view.pauses.get(queue)
            live = self._is_paused(queue, now)
            since = held.pause.since if held is not None and live else now
            made[:] = [Pause(queue, reason, since, until)]
            subject = self.subjects.named("p", queue)
            return [self._write(subject, r.encode(r.PauseRecord(made[0])))]

        await self._step(step)
        return made[0]

    async def resume(self, queue: str) -> bool:
        check_pause(queue, None)
        now = await self._fresh()
        was = self._is_paused(queue, now)

        def step() -> list[Write] | None:
            if queue not in self.view.pauses:
                return None
            return [self._delete(self.subjects.named("p", queue))]

        await self._step(step)
        return was

    async def paused(self) -> dict[str, Pause]:
        return self._live_pauses(await self._fresh())
