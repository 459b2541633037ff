"""``memory://``: the whole contract in one process's memory, for tests and the reference.

Every operation runs without awaiting in between, so each is atomic on the event loop. The
store lives as long as the backend object; nothing survives the process.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import msgspec

from pigeon import codec
from pigeon.backends.base import (
    DEAD_LETTER_TTL,
    KEEP_FOR_DEPENDENTS,
    MessagePage,
    MessageQuery,
    dead_reason,
    join_fired,
    redact,
)
from pigeon.backends.info import StoredDead, StoredMessage, message_info
from pigeon.backends.memory.listing import list_stored
from pigeon.backends.memory.pausing import Pausing
from pigeon.backends.shared import Tally, dependencies, expiry, first_state
from pigeon.clock import SYSTEM, Clock
from pigeon.message import (
    DeadLetter,
    Delivery,
    Failure,
    Lease,
    Message,
    MessageInfo,
    Outcome,
    Result,
    Stats,
    WorkerInfo,
)


@dataclass
class _Record:
    message: Message
    body: bytes
    state: str  # waiting | pending | leased
    due: float
    seq: int
    attempt: int = 0
    failures: int = 0
    expiries: int = 0
    lease_until: float = 0.0
    worker: str | None = None
    version: int = 0  # bumped on every state change; stale heap entries are skipped
    cancel_requested: bool = False  # cancel() was asked while it was leased
    expires_at: float | None = None  # resolved at enqueue (shared.expiry)
    sent_at: float = 0.0  # when it was stored


@dataclass
class _Join:
    mode: str
    total: int
    settled: int = 0
    succeeded: int = 0
    fired: bool = False
    #: The members not counted yet (those that had settled when it was sent count at once).
    members: list[str] = field(default_factory=list)


class MemoryBackend(Pausing):
    """The reference backend: simple data structures, every rule of the contract."""

    def __init__(self, url: str = "memory://", *, clock: Clock = SYSTEM) -> None:
        """``clock`` is what every time is read on (``pigeon.testing`` gives a
        ``ManualClock``); a jump of it wakes waiting fetches."""
        super().__init__()
        self._now = clock.time
        clock.listen(self._notify)
        self.url = redact(url)
        self._msgs: dict[str, _Record] = {}
        self._ready: dict[str, list[tuple[int, float, int, str, int]]] = {}
        self._scheduled: list[tuple[float, int, str, int]] = []
        self._leases: list[tuple[float, str, int]] = []
        self._results: dict[str, tuple[Result, float]] = {}
        #: The queue and task of each id whose outcome is kept (for list_messages).
        self._where: dict[str, tuple[str, str]] = {}
        self._dead: dict[str, tuple[DeadLetter, float]] = {}
        self._keys: dict[str, tuple[str, float]] = {}
        self._followers: dict[str, list[str]] = {}
        self._joins: dict[str, _Join] = {}
        self._memberships: dict[str, list[str]] = {}
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._seq = 0

    # lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def time(self) -> float:
        return self._now()

    # queue ----------------------------------------------------------------------------

    def _make_due(self, rec: _Record, now: float) -> None:
        rec.state = "pending"
        rec.version += 1
        if rec.due > now:
            heapq.heappush(self._scheduled, (rec.due, rec.seq, rec.message.id, rec.version))
        else:
            self._push_ready(rec)

    def _push_ready(self, rec: _Record) -> None:
        heap = self._ready.setdefault(rec.message.queue, [])
        heapq.heappush(heap, (-rec.message.priority, rec.due, rec.seq, rec.message.id, rec.version))

    async def enqueue(self, messages: Sequence[Message]) -> list[str]:
        now = self._now()
        ids: list[str] = []
        for m in messages:
            if m.key is not None:
                held = self._keys.get(m.key)
                if held is not None and held[1] > now:
                    ids.append(held[0])
                    continue
            ids.append(m.id)
            if m.id in self._msgs or m.id in self._results or m.id in self._dead:
                continue
            if m.key is not None:
                self._keys[m.key] = (m.id, now + m.result_ttl)
            due = max(now + m.delay, m.run_at or 0.0)
            self._seq += 1
            rec = _Record(
                m, codec.encode_message(m), "waiting", due, self._seq,
                expires_at=expiry(m, now), sent_at=now,
            )  # fmt: skip
            self._msgs[m.id] = rec
            if m.after is None and m.join is None:  # most sends: nothing to look up
                state, join = "pending", None
            else:
                results = self._results
                outcomes = {r: results[r][0].state for r in dependencies((m,)) if r in results}
                state, join = first_state(m, outcomes)
            if join is not None:
                self._joins[m.id] = _Join(
                    join.mode, join.total, join.settled, join.succeeded, join.fired, join.unsettled
                )
                for member in join.unsettled:
                    self._memberships.setdefault(member, []).append(m.id)
            elif state == "waiting":
                assert m.after is not None
                self._followers.setdefault(m.after, []).append(m.id)
            if state == "pending":
                self._make_due(rec, now)
        self._notify()
        return ids

    def _promote(self, now: float) -> None:
        """Move due scheduled messages to their ready heaps; reclaim lapsed leases."""
        while self._scheduled and self._scheduled[0][0] <= now:
            _, _, mid, version = heapq.heappop(self._scheduled)
            rec = self._msgs.get(mid)
            if rec is not None and rec.version == version and rec.state == "pending":
                self._push_ready(rec)
        while self._leases and self._leases[0][0] <= now:
            until, mid, attempt = heapq.heappop(self._leases)
            rec = self._msgs.get(mid)
            if rec is None or rec.state != "leased" or rec.attempt != attempt:
                continue
            if rec.lease_until > now:  # extended since this entry was pushed
                heapq.heappush(self._leases, (rec.lease_until, mid, attempt))
                continue
            rec.expiries += 1
            rec.worker = None
            if rec.expiries >= rec.message.max_deliveries:
                reason = (
                    f"poison: lease expired {rec.expiries} times without a settle "
                    "(the worker running it probably crashed)"
                )
                self._finish(rec, "dead", None, Failure("Poison", reason, id=mid), now)
            else:
                rec.due = until
                rec.state = "pending"
                rec.version += 1
                self._push_ready(rec)

    async def fetch(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        lease: float | None = None,
        wait: float = 0.0,
    ) -> list[Delivery]:
        deadline = time.monotonic() + wait
        while True:
            out = self._fetch_now(queues, limit, worker, lease)
            remaining = deadline - time.monotonic()
            if out or remaining <= 0:
                return out
            next_due = self._next_due()
            if self._pauses:  # a pause that ends by itself ends the wait too
                next_due = min(next_due, self._pauses_end(queues, self._now()) or next_due)
            await self._wait_change(min(remaining, max(next_due - self._now(), 0.001)))

    def next_due(self) -> float | None:
        """When (on this backend's clock) the next delayed message or lease falls due; None
        when nothing waits for a time. ``pigeon.testing`` moves its clock there."""
        times = [self._scheduled[0][0]] if self._scheduled else []
        if self._leases:
            times.append(self._leases[0][0])
        return min(times) if times else None

    def _next_due(self) -> float:
        times = [self._scheduled[0][0]] if self._scheduled else []
        if self._leases:
            times.append(self._leases[0][0])
        return min(times) if times else self._now() + 3600

    def _fetch_now(
        self, queues: Sequence[str], limit: int, worker: str, lease: float | None
    ) -> list[Delivery]:
        now = self._now()
        self._promote(now)
        out: list[Delivery] = []
        for queue in queues:
            if self._pauses and self._is_paused(queue, now):
                continue
            heap = self._ready.get(queue)
            while heap and len(out) < limit:
                _, _, _, mid, version = heapq.heappop(heap)
                rec = self._msgs.get(mid)
                if rec is None or rec.version != version or rec.state != "pending":
                    continue
                m = rec.message
                if rec.expires_at is not None and rec.expires_at <= now:
                    error = Failure("Expired", "the message expired before it could run", id=mid)
                    self._finish(rec, "dead", None, error, now)
                    continue
                rec.attempt += 1
                rec.state = "leased"
                rec.version += 1
                rec.worker = worker
                length = lease if lease is not None else m.lease
                rec.lease_until = now + length
                heapq.heappush(self._leases, (rec.lease_until, mid, rec.attempt))
                waited = max(now - rec.due, 0.0)
                out.append(Delivery(mid, rec.attempt, rec.failures, rec.body, length, waited))
        return out

    def _held(self, lease: Lease) -> _Record | None:
        rec = self._msgs.get(lease.id)
        if rec is None or rec.state != "leased" or rec.attempt != lease.attempt:
            return None
        return rec

    async def extend(self, leases: Sequence[Lease]) -> set[str]:
        now = self._now()
        lost: set[str] = set()
        for lease in leases:
            rec = self._held(lease)
            if rec is None:
                lost.add(lease.id)
            else:
                rec.lease_until = now + rec.message.lease
        return lost

    async def release(self, leases: Sequence[Lease], delay: float = 0.0) -> int:
        now = self._now()
        count = 0
        for lease in leases:
            rec = self._held(lease)
            if rec is not None:
                rec.worker = None
                rec.due = now + max(delay, 0.0)
                self._make_due(rec, now)
                count += 1
        if count:
            self._notify()
        return count

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        now = self._now()
        applied: list[bool] = []
        for o in outcomes:
            rec = self._held(Lease(o.id, o.attempt))
            if rec is None:
                applied.append(False)
                continue
            applied.append(True)
            if o.state == "retry":
                rec.failures += 1
                rec.worker = None
                rec.due = now + o.retry_in
                self._make_due(rec, now)
            else:
                self._finish(rec, o.state, o.value, o.error, now, o.result_ttl)
        self._notify()
        return applied

    def _finish(
        self,
        rec: _Record,
        state: str,
        value: msgspec.Raw | None,
        error: Failure | None,
        now: float,
        ttl: float | None = None,
    ) -> None:
        """Settle a message for good: result, dead letter, followers, joins. One step."""
        mid = rec.message.id
        del self._msgs[mid]
        rec.version += 1
        followers = self._followers.pop(mid, [])
        joins = self._memberships.get(mid, [])
        ttl = rec.message.result_ttl if ttl is None else ttl
        if ttl <= 0 and (followers or joins):
            ttl = KEEP_FOR_DEPENDENTS
        if state == "dead":
            reason = dead_reason(error)
            letter = DeadLetter(mid, rec.message.queue, rec.message.task, reason, now, rec.body)
            self._dead[mid] = (letter, now + DEAD_LETTER_TTL)
        if mid in self._results or ttl <= 0:
            return self._advance(mid, followers, joins, state, now)
        result = Result(mid, state, value, error, now)  # type: ignore[arg-type]
        self._results[mid] = (result, now + ttl)
        self._where[mid] = (rec.message.queue, rec.message.task)
        self._advance(mid, followers, joins, state, now)

    def _advance(
        self, mid: str, followers: list[str], joins: list[str], state: str, now: float
    ) -> None:
        for fid in followers:
            follower = self._msgs.get(fid)
            if follower is not None and follower.state == "waiting":
                self._make_due(follower, now)
        # A membership counts once: a dead member that is re-queued and settles again does
        # not advance its joins a second time.
        self._memberships.pop(mid, None)
        for jid in joins:
            join = self._joins.get(jid)
            if join is None or join.fired:
                continue
            join.settled += 1
            join.succeeded += state == "succeeded"
            if join_fired(join.mode, join.total, join.settled, join.succeeded):
                join.fired = True
                jrec = self._msgs.get(jid)
                if jrec is not None and jrec.state == "waiting":
                    self._make_due(jrec, now)

    # results ---------------------------------------------------------------------------

    async def results(self, ids: Collection[str]) -> dict[str, Result]:
        now = self._now()
        out: dict[str, Result] = {}
        for mid in ids:
            stored = self._results.get(mid)
            if stored is not None and stored[1] > now:
                out[mid] = stored[0]
        return out

    async def wait(self, ids: Collection[str], timeout: float) -> dict[str, Result]:
        deadline = time.monotonic() + timeout
        while True:
            found = await self.results(ids)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            await self._wait_change(remaining)

    # control ---------------------------------------------------------------------------

    async def cancel(self, ids: Collection[str]) -> list[str]:
        now = self._now()
        done: list[str] = []
        for mid in ids:
            rec = self._msgs.get(mid)
            if rec is None:
                continue
            if rec.state == "leased":
                rec.cancel_requested = True  # its worker learns of it through cancelling()
                continue
            if rec.state == "waiting" and rec.message.after is not None:
                waiting = self._followers.get(rec.message.after, [])
                if mid in waiting:
                    waiting.remove(mid)
            error = Failure("Cancelled", "cancelled before it ran", id=mid)
            self._finish(rec, "cancelled", None, error, now)
            done.append(mid)
        self._notify()
        return done

    async def cancelling(self, leases: Sequence[Lease]) -> set[str]:
        found: set[str] = set()
        for lease in leases:
            rec = self._held(lease)
            if rec is not None and rec.cancel_requested:
                found.add(lease.id)
        return found

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        letters = [d for d, _ in self._dead.values() if queue is None or d.queue == queue]
        letters.sort(key=lambda d: (d.died_at, d.id))
        return letters[:limit]

    async def requeue(self, ids: Collection[str]) -> int:
        now = self._now()
        count = 0
        for mid in ids:
            stored = self._dead.pop(mid, None)
            if stored is None:
                continue
            self._results.pop(mid, None)
            m = codec.decode_message(stored[0].body)
            self._seq += 1
            rec = _Record(
                m, stored[0].body, "waiting", now, self._seq,
                expires_at=expiry(m, now), sent_at=now,
            )  # fmt: skip
            self._msgs[mid] = rec
            self._make_due(rec, now)
            count += 1
        self._notify()
        return count

    async def purge_dead(self, ids: Collection[str] | None = None) -> int:
        if ids is None:
            count = len(self._dead)
            self._dead.clear()
            return count
        return sum(self._dead.pop(mid, None) is not None for mid in ids)

    async def purge(self, queue: str) -> int:
        doomed = [
            rec
            for rec in self._msgs.values()
            if rec.message.queue == queue and rec.state != "leased"
        ]
        for rec in doomed:
            del self._msgs[rec.message.id]
            rec.version += 1
        return len(doomed)

    async def inspect(self, id: str) -> MessageInfo | None:
        now = self._now()
        rec = self._msgs.get(id)
        stored = self._results.get(id)
        result = stored[0] if stored is not None and stored[1] > now else None
        message = dead = None
        if rec is not None:
            m = rec.message
            message = StoredMessage(
                rec.state, m.queue, m.task, rec.attempt, rec.failures, rec.due,
                rec.lease_until, rec.worker, rec.body, rec.cancel_requested, rec.sent_at,
            )  # fmt: skip
        elif id in self._dead:
            letter = self._dead[id][0]
            dead = StoredDead(letter.queue, letter.task, letter.reason, letter.body)
        return message_info(id, now, message, result, dead)

    async def stats(self) -> Stats:
        now = self._now()
        tally = Tally()
        for rec in self._msgs.values():
            tally.message(rec.message.queue, rec.state, rec.due > now)
        for letter, _ in self._dead.values():
            tally.dead_letters(letter.queue)
        results = sum(1 for _, exp in self._results.values() if exp > now)
        workers = (info for info, exp in self._workers.values() if exp > now)
        return tally.stats(results, workers, self._live_pauses(now))

    async def list_messages(self, query: MessageQuery) -> MessagePage:
        return list_stored(
            query, self._now(), self._msgs, self._results, self._where, self._dead, self._keys
        )

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        now = self._now()
        self._workers[info.id] = (msgspec.structs.replace(info, last_seen=now), now + ttl)

    async def retire(self, worker: str) -> None:
        self._workers.pop(worker, None)

    async def sweep(self) -> int:
        now = self._now()
        count = 0
        stores = (
            self._results,
            self._dead,
            self._keys,
            self._workers,
            self._locks,
            self._buckets,
            self._progress,
        )
        for store in stores:
            expired = [k for k, v in store.items() if v[1] <= now]
            for k in expired:
                del store[k]
            count += len(expired)
        for name, holders in list(self._slots.items()):
            for holder in [h for h, until in holders.items() if until <= now]:
                del holders[holder]
                count += 1
            if not holders:
                del self._slots[name]
        for mid in [m for m in self._where if m not in self._results]:
            del self._where[mid]
        for jid in [j for j in self._joins if j not in self._msgs]:
            join = self._joins.pop(jid)
            for member in join.members:
                refs = self._memberships.get(member)
                if refs is not None and jid in refs:
                    refs.remove(jid)
                    if not refs:
                        del self._memberships[member]
        return count
