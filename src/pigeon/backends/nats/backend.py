"""``NatsBackend``: the queue operations (enqueue, fetch, extend, release, settle), results,
waits and cancellation. The design is in the package's docstring (``nats/__init__.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from functools import partial
from typing import Any

import msgspec

from pigeon.aio import shielded
from pigeon.backends.nats import records as r
from pigeon.backends.nats.batch import MAX_BATCH, BatchConflict, Write
from pigeon.backends.nats.control import Control
from pigeon.backends.nats.coordination import Coordination
from pigeon.backends.nats.records import RecordState
from pigeon.backends.nats.settling import finish, outcome_state
from pigeon.backends.nats.writes import commit
from pigeon.backends.shared import (
    dependencies,
    expiry,
    first_outcomes,
    first_state,
    orphaned_leases,
    release_orphans,
    verdicts,
)
from pigeon.codec import encode_message
from pigeon.message import Delivery, Failure, Lease, Message, Outcome, Result

#: Messages without a key or links stored per atomic batch (the server takes 1,000).
PLAIN_CHUNK = 500
#: Members a join's first batch links (with its record and its key); the rest follow.
LINK_BUDGET = MAX_BATCH - 2
#: Lapsed leases one fetch reclaims at most.
RECLAIM = 256
#: Rounds a fetch tries for more candidates after some were taken by another worker.
FETCH_ROUNDS = 4


def _poison(rec: r.Record) -> Failure:
    reason = (
        f"poison: lease expired {rec.lost} times without a settle "
        "(the worker running it probably crashed)"
    )
    return Failure("Poison", reason, id=rec.id)


def _layers(messages: list[Message]) -> list[list[Message]]:
    """``messages`` in layers that can each be stored concurrently: a message comes in a
    later layer than the messages of the same batch it follows or joins, so that its step
    finds them stored and links to them."""
    left = {m.id: m for m in messages}
    layers: list[list[Message]] = []
    while left:
        layer = [m for m in left.values() if not any(d in left for d in dependencies((m,)))]
        if not layer:  # a cycle of references: store the rest as they come
            layer = list(left.values())
        for m in layer:
            del left[m.id]
        layers.append(layer)
    return layers


class NatsBackend(Control, Coordination):
    """The Backend contract on NATS JetStream (see the package docstring)."""

    # enqueue -------------------------------------------------------------------------

    def _exists(self, id: str, now: float) -> bool:
        """Whether ``id`` is stored as a message, a kept outcome or a dead letter."""
        view = self.view
        rec = view.records.get(id)
        if rec is not None and (rec.state in r.LIVE or rec.until > now):
            return True
        kept = view.kept.get(id)
        return kept is not None and kept.until > now

    def _outcome_state(self, id: str, now: float) -> str | None:
        return outcome_state(self.view, id, now)

    async def enqueue(self, messages: Sequence[Message]) -> list[str]:
        now = await self._fresh()
        ids: list[str] = []
        jobs: list[Message] = []
        places: list[int] = []
        seen: set[str] = set()
        for m in messages:
            hold = self.view.keys.get(m.key) if m.key is not None else None
            if hold is not None and hold.until > now:
                ids.append(hold.id)
                continue
            ids.append(m.id)
            if m.id in seen or self._exists(m.id, now):
                continue
            seen.add(m.id)
            places.append(len(ids) - 1)
            jobs.append(m)
        stood = dict(zip((m.id for m in jobs), places, strict=True))
        for layer in _layers(jobs):
            plain = [m for m in layer if m.key is None and m.after is None and m.join is None]
            linked = [m for m in layer if m.key is not None or m.after or m.join is not None]
            chunks = [plain[i : i + PLAIN_CHUNK] for i in range(0, len(plain), PLAIN_CHUNK)]
            await self._each([partial(self._store_plain, chunk, now) for chunk in chunks])
            done = await self._each([partial(self._store, m, now) for m in linked])
            for m, id in zip(linked, done, strict=True):
                ids[stood[m.id]] = id
        self.view.changed()
        return ids

    async def _store_plain(self, chunk: list[Message], now: float) -> None:
        """Store messages without a key or links as one atomic batch (one round trip);
        when one of them conflicts (stored meanwhile by another sender), one by one."""
        writes: list[Write] = []
        for m in chunk:
            if not self._exists(m.id, now):
                writes.append(self._record(self._new_record(m, "pending", now)))
        if not writes:
            return
        try:
            stored = await commit(self.nc, writes)
        except BatchConflict:
            await self._each([partial(self._store, m, now) for m in chunk])
            return
        await self.view.reached(stored)

    def _new_record(self, m: Message, state: RecordState, now: float) -> r.Record:
        return r.Record(
            id=m.id, queue=m.queue, task=m.task, state=state, body=encode_message(m),
            priority=m.priority, due=max(now + m.delay, m.run_at or 0.0), lease=m.lease,
            max_deliveries=m.max_deliveries, expires_at=expiry(m, now),
            result_ttl=m.result_ttl, sent_at=now, after=m.after, key=m.key,
        )  # fmt: skip

    async def _store(self, m: Message, now: float) -> str:
        """Store one message (with its key, and its links to the message it follows or the
        members of its join) in one atomic step; returns the id that stands for it."""
        stood = m.id

        def step() -> list[Write] | None:
            nonlocal stood
            view = self.view
            if m.key is not None:
                hold = view.keys.get(m.key)
                if hold is not None and hold.until > now and hold.id != m.id:
                    stood = hold.id
                    return None
            if self._exists(m.id, now):
                return None
            outcomes: dict[str, str] = {}
            for dep in dependencies((m,)):
                found = self._outcome_state(dep, now)
                if found is not None:
                    outcomes[dep] = found
            state, join = first_state(m, outcomes)
            rec = self._new_record(m, state, now)
            writes = [self._record(rec)]
            if m.key is not None and m.result_ttl > 0:
                hold = r.KeyHold(m.id, now + m.result_ttl)
                ttl = r.ttl_header(m.result_ttl)
                writes.append(self._write(self.subjects.key(m.key), r.encode(hold), ttl))
            if join is not None:
                rec.join = r.JoinCounts(
                    join.mode, join.total, join.settled, join.succeeded, join.fired
                )
                live = [x for x in join.unsettled if self._live(x)]
                first, rec.linking = live[:LINK_BUDGET], live[LINK_BUDGET:]  # rest: link_rest
                writes[0] = self._record(rec)
                for member, times in Counter(first).items():
                    held = view.records[member]
                    joined = [*held.joins, *([m.id] * times)]
                    writes.append(self._record(msgspec.structs.replace(held, joins=joined)))
            elif state == "waiting" and m.after is not None:
                parent = view.records.get(m.after)
                if parent is not None and parent.state in r.LIVE:
                    followers = [*parent.followers, m.id]
                    writes.append(
                        self._record(msgspec.structs.replace(parent, followers=followers))
                    )
            return writes

        # followers of one parent each rewrite its record: queue them here, not on the server
        lane = f"m.{m.after}" if m.join is None and m.after is not None else None
        await self._step(step, lane)
        if m.id in self.view.unreleased:
            await self._release_rest(m.id)
        return stood

    def _join_lane(self, id: str) -> str | None:
        """The lane of a member's settle: the settles of one join's members all rewrite
        the join's record, so this object's queue here rather than conflict (members of
        several joins: on the first)."""
        rec = self.view.records.get(id)
        return f"m.{rec.joins[0]}" if rec is not None and rec.joins else None

    def _live(self, id: str) -> bool:
        rec = self.view.records.get(id)
        return rec is not None and rec.state in r.LIVE

    # fetch -----------------------------------------------------------------------------

    async def fetch(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        lease: float | None = None,
        wait: float = 0.0,
    ) -> list[Delivery]:
        deadline = time.monotonic() + wait
        now = await self._fresh()
        while True:
            job = self._fetch_now(queues, limit, worker, lease, now)
            out = await shielded(job, self._orphaned)
            remaining = deadline - time.monotonic()
            if out or remaining <= 0 or limit <= 0:
                return out
            nap = remaining
            due = self.view.next_due()
            if due is not None:
                nap = min(nap, max(due - now, 0.001))
            ends = [p.pause.until for q in queues if (p := self.view.pauses.get(q)) is not None]
            for until in ends:
                if until is not None and until > now:
                    nap = min(nap, until - now)
            await self.view.wait_change(nap)
            now = await self._now()

    def _orphaned(self, task: asyncio.Task[list[Delivery]]) -> None:
        def done(job: asyncio.Future[list[Delivery]]) -> None:
            leases = orphaned_leases(job, lambda out: [Lease(d.id, d.attempt) for d in out])
            if leases:
                cleanup = asyncio.ensure_future(release_orphans(self.release, leases))
                self._cleanups.add(cleanup)  # held until it ends
                cleanup.add_done_callback(self._cleanups.discard)

        task.add_done_callback(done)

    async def _fetch_now(
        self, queues: Sequence[str], limit: int, worker: str, lease: float | None, now: float
    ) -> list[Delivery]:
        view = self.view
        if view.unreleased:
            await self._resume_releases()
        wanted = set(queues)
        lapsed = view.lapsed(now, RECLAIM)
        mine = [x for x in lapsed if x[2].queue in wanted and not self._is_paused(x[2].queue, now)]
        view.put_back(x for x in lapsed if x not in mine)  # another queue's: its fetch's
        if mine:
            await self._each([partial(self._reclaim, x[0], x[2], now) for x in mine])
        view.promote(now)
        out: list[Delivery] = []
        for _ in range(FETCH_ROUNDS):
            need = limit - len(out)
            if need <= 0:
                break
            picked: list[tuple[str, int, r.Record]] = []
            jobs = []
            for queue in queues:
                if len(picked) >= need:
                    break
                if self._is_paused(queue, now):
                    continue
                for id, seq, rec in view.candidates(queue, need - len(picked)):
                    if rec.expires_at is not None and rec.expires_at <= now:
                        error = Failure("Expired", "the message expired before it could run", id=id)
                        jobs.append(lambda rec=rec, e=error: self._finish(rec, "dead", e, now))
                        continue
                    picked.append((id, seq, rec))
            if not picked and not jobs:
                break
            leases = [lambda x=x: self._lease(x[2], x[1], worker, lease, now) for x in picked]
            got = await self._each([*leases, *jobs])
            out.extend(d for d in got[: len(leases)] if isinstance(d, Delivery))
            if not jobs and all(isinstance(d, Delivery) for d in got):
                break  # every candidate leased, none lost to another worker or expired
        return out

    async def _lease(
        self, rec: r.Record, seq: int, worker: str, lease: float | None, now: float
    ) -> Delivery | None:
        length = lease if lease is not None else rec.lease
        leased = msgspec.structs.replace(
            rec, state="leased", attempt=rec.attempt + 1, worker=worker, lease_until=now + length
        )
        write = Write(self.subjects.message(rec.id), r.encode(leased), seq)
        try:
            stored = await commit(self.nc, [write])
        except BatchConflict:
            return None  # another worker took it (or it changed): skip it
        await self.view.reached(stored)
        return Delivery(
            rec.id, leased.attempt, rec.failures, rec.body, length, max(now - rec.due, 0.0)
        )

    async def _reclaim(self, id: str, was: r.Record, now: float) -> None:
        def step() -> list[Write] | None:
            rec = self.view.records.get(id)
            if rec is None or rec.state != "leased" or rec.attempt != was.attempt:
                return None
            if rec.lease_until > now:
                return None
            lost = msgspec.structs.replace(rec, lost=rec.lost + 1, worker=None)
            if lost.lost >= rec.max_deliveries:
                return finish(self.view, lost, "dead", None, _poison(lost), now)
            return [
                self._record(msgspec.structs.replace(lost, state="pending", due=rec.lease_until))
            ]

        await self._step(step)
        await self._release_rest(id)

    async def _finish(self, was: r.Record, state: str, error: Failure | None, now: float) -> None:
        def step() -> list[Write] | None:
            rec = self.view.records.get(was.id)
            if rec is None or rec.state not in r.LIVE:
                return None
            return finish(self.view, rec, state, None, error, now)

        await self._step(step)
        await self._release_rest(was.id)

    # leases ------------------------------------------------------------------------------

    def _held(self, lease: Lease) -> r.Record | None:
        rec = self.view.records.get(lease.id)
        if rec is None or rec.state != "leased" or rec.attempt != lease.attempt:
            return None
        return rec

    async def _change_held(self, lease: Lease, change: Mapping[str, Any]) -> bool:
        """Rewrite the held record of ``lease`` with ``change``; False if it is not held."""
        held = False

        def step() -> list[Write] | None:
            nonlocal held
            rec = self._held(lease)
            held = rec is not None
            if rec is None:
                return None
            fields = {k: (v(rec) if callable(v) else v) for k, v in change.items()}
            return [self._record(msgspec.structs.replace(rec, **fields))]

        await self._step(step)
        return held

    async def extend(self, leases: Sequence[Lease]) -> set[str]:
        now = await self._now()
        change = {"lease_until": lambda rec: now + rec.lease}
        jobs = [partial(self._change_held, x, change) for x in leases]
        kept = await self._each(jobs)
        return {x.id for x, ok in zip(leases, kept, strict=True) if not ok}

    async def release(self, leases: Sequence[Lease], delay: float = 0.0) -> int:
        now = await self._now()
        change = {"state": "pending", "worker": None, "due": now + max(delay, 0.0)}
        jobs = [partial(self._change_held, x, change) for x in leases]
        count = sum(await self._each(jobs))
        self.view.changed()
        return count

    # settle ------------------------------------------------------------------------------

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        now = await self._now()
        first = first_outcomes(outcomes)
        chosen = list(first.values())
        done = await self._each([partial(self._settle_one, o, now) for o in chosen])
        applied = {(o.id, o.attempt) for o, ok in zip(chosen, done, strict=True) if ok}
        return verdicts(outcomes, first, applied)

    async def _settle_one(self, o: Outcome, now: float) -> bool:
        held = False

        def step() -> list[Write] | None:
            nonlocal held
            rec = self._held(Lease(o.id, o.attempt))
            held = rec is not None
            if rec is None:
                return None
            if o.state == "retry":
                retried = msgspec.structs.replace(
                    rec, state="pending", worker=None, failures=rec.failures + 1,
                    due=now + o.retry_in,
                )  # fmt: skip
                return [self._record(retried)]
            return finish(self.view, rec, o.state, o.value, o.error, now, o.result_ttl)

        await self._step(step, self._join_lane(o.id))
        if held and o.id in self.view.unreleased:
            await self._release_rest(o.id)
        return held

    # results -------------------------------------------------------------------------------

    def _kept(self, ids: Collection[str], now: float) -> dict[str, Result]:
        kept = self.view.kept
        return {i: k.result for i in ids if (k := kept.get(i)) is not None and k.until > now}

    async def results(self, ids: Collection[str]) -> dict[str, Result]:
        return self._kept(ids, await self._fresh())

    async def wait(self, ids: Collection[str], timeout: float) -> dict[str, Result]:
        deadline = time.monotonic() + timeout
        found = await self.results(ids)
        while not found:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {}
            await self.view.wait_change(remaining)
            found = self._kept(ids, await self._now())
        return found

    # cancel ------------------------------------------------------------------------------

    async def cancel(self, ids: Collection[str]) -> list[str]:
        now = await self._fresh()
        order = list(dict.fromkeys(ids))
        done = await self._each([partial(self._cancel_one, i, now) for i in order])
        self.view.changed()
        return [i for i, ok in zip(order, done, strict=True) if ok]

    async def _cancel_one(self, id: str, now: float) -> bool:
        settled = False

        def step() -> list[Write] | None:
            nonlocal settled
            settled = False
            rec = self.view.records.get(id)
            if rec is None or rec.state not in r.LIVE:
                return None
            if rec.state == "leased":
                if rec.cancel:
                    return None
                return [self._record(msgspec.structs.replace(rec, cancel=True))]
            settled = True
            error = Failure("Cancelled", "cancelled before it ran", id=id)
            return finish(self.view, rec, "cancelled", None, error, now)

        await self._step(step, self._join_lane(id))
        if settled and id in self.view.unreleased:
            await self._release_rest(id)
        return settled

    async def cancelling(self, leases: Sequence[Lease]) -> set[str]:
        await self._fresh()
        return {x.id for x in leases if (rec := self._held(x)) is not None and rec.cancel}
