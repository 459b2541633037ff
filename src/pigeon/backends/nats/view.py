"""The backend object's view of the stream: every record as last delivered, indexed for the
operations, fed by one ordered push consumer, and the server's clock.

The view is a cache, never the truth: every change is a compare-and-set on the sequence
the view read (``writes``), and a write refused because the view was behind refreshes the
subjects involved from the server (direct gets) and tries again. Reads that must see what
another client wrote first pass a *barrier* (``sync``): the object publishes a tick on its
own subject ``S.t.<client>`` and waits until the consumer has delivered it; since the
consumer delivers in stream order, the view then holds everything stored before the tick.

Clock: nats-server has no time call, but it stamps every stored message. The tick's
stamp, read as it is delivered, against ``time.monotonic()`` at that moment, gives the
offset between this process's monotonic clock and the server's (``now = monotonic() +
offset``, never moving backwards). Every barrier refreshes it, and ``now`` passes one when
its sample is older than ``CLOCK_FRESH``. The worker's wall clock is never read, so a
skewed host clock changes nothing.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from pigeon.backends.base import EVENTS_KEPT
from pigeon.backends.nats import records as r
from pigeon.errors import BackendError
from pigeon.message import Event

log = logging.getLogger("pigeon.backends.nats")

#: The kinds of record whose change wakes waiting fetches, waits and event readers
#: (messages, pauses, events); not ticks, heartbeats or locks, which change all the time.
_WAKING = frozenset({"m", "p", "e"})
#: Seconds a clock sample is trusted before ``now`` takes a fresh one.
CLOCK_FRESH = 2.0
#: Seconds a barrier waits for its tick to come back through the consumer.
BARRIER_TIMEOUT = 10.0


class View:
    """The records of one stream as this object last saw them (see the module docstring)."""

    def __init__(self, subjects: r.Subjects, client: str) -> None:
        self.subjects = subjects
        self.tick_subject = subjects.named("t", client)
        #: The sequence of each subject's last message seen (0: known to be empty).
        self.seen: dict[str, int] = {}
        self.records: dict[str, r.Record] = {}
        #: The outcomes the tombstones keep (``records.kept_of``).
        self.kept: dict[str, r.Kept] = {}
        self.keys: dict[str, r.KeyHold] = {}
        self.workers: dict[str, r.WorkerRecord] = {}
        self.locks: dict[str, r.LockRecord] = {}
        self.buckets: dict[str, r.Bucket] = {}
        self.places: dict[str, r.Places] = {}
        self.marks: dict[str, float] = {}
        self.pauses: dict[str, r.PauseRecord] = {}
        self.progress: dict[str, r.ProgressRecord] = {}
        self.events: deque[tuple[int, Event]] = deque(maxlen=EVENTS_KEPT)
        #: Pending records by due time: (due, id, seq); promoted into ``ready`` by fetch.
        self.scheduled: list[tuple[float, str, int]] = []
        #: Due records per queue: (-priority, due, id, seq).
        self.ready: dict[str, list[tuple[int, float, str, int]]] = {}
        #: Leased records by deadline: (lease_until, id, seq).
        self.leases: list[tuple[float, str, int]] = []
        #: Steps left unfinished (``settling``): tombstones that still list followers or
        #: joins to release, joins still to link to members; with the monotonic time the
        #: view first saw them so.
        self.unreleased: dict[str, float] = {}
        self.last = 0
        self._reached: list[tuple[int, asyncio.Future[None]]] = []
        self._changed = asyncio.Event()
        self._offset: float | None = None
        self._sampled = 0.0
        self._latest = 0.0
        self._sub: Any = None

    # feeding -------------------------------------------------------------------------

    async def start(self, js: JetStreamContext) -> None:
        """Subscribe the ordered consumer that feeds the view (last message per subject,
        then every new one)."""
        self._sub = await js.subscribe(
            f"{self.subjects.stream}.>",
            stream=self.subjects.stream,
            cb=self._on_message,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            idle_heartbeat=2.0,
        )

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:  # the connection may be gone already
                log.debug("NATS view unsubscribe: %s", exc)
            self._sub = None
        for _, future in self._reached:
            if not future.done():
                future.cancel()
        self._reached.clear()

    async def _on_message(self, msg: Msg) -> None:
        meta = msg.metadata
        seq = meta.sequence.stream
        if msg.subject == self.tick_subject:
            self._sampled = time.monotonic()
            self._offset = meta.timestamp.timestamp() - self._sampled
        self.apply(msg.subject, seq, msg.data)
        self.reach(seq)

    def reach(self, seq: int) -> None:
        """The consumer has delivered up to ``seq``: wake the barriers it passes."""
        if seq > self.last:
            self.last = seq
        if self._reached:
            keep = []
            for wanted, future in self._reached:
                if wanted <= self.last:
                    if not future.done():
                        future.set_result(None)
                else:
                    keep.append((wanted, future))
            self._reached = keep

    async def reached(self, seq: int, timeout: float = BARRIER_TIMEOUT) -> None:
        """Wait until the view holds every message up to ``seq``."""
        if seq <= self.last:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reached.append((seq, future))
        async with asyncio.timeout(timeout):
            await future

    def apply(self, subject: str, seq: int, data: bytes | None) -> None:
        """Take the message ``seq`` of ``subject`` into the view (an older one than the view
        holds is ignored; empty data removes the record)."""
        if seq <= self.seen.get(subject, -1) and seq != 0:
            return
        self.seen[subject] = seq
        named = self.subjects.split(subject)
        if named is None:
            return
        kind, name = named
        try:
            self._store(kind, name, seq, data or b"")
        except msgspec.DecodeError as exc:
            log.warning("NATS record %s (sequence %d) is unreadable: %s", subject, seq, exc)
        if kind in _WAKING:
            self.changed()

    def forget(self, subject: str) -> None:
        """The server holds no message on ``subject`` (a refresh found it empty)."""
        self.seen[subject] = 0
        named = self.subjects.split(subject)
        if named is not None:
            self._store(named[0], named[1], 0, b"")
            self.changed()

    def _store(self, kind: str, name: str, seq: int, data: bytes) -> None:
        if kind == "m":
            self._store_record(name, seq, data)
        elif kind == "e":
            if data:
                self.events.append((seq, r.EVENT.decode(data).event))
        elif kind in self._tables:  # others (the ticks, kinds of a later version) are skipped
            table, decode = self._tables[kind]
            store: dict[str, Any] = getattr(self, table)
            if data:
                store[name] = decode(data)
            else:
                store.pop(name, None)

    _tables: dict[str, tuple[str, Any]] = {
        "k": ("keys", r.KEY.decode),
        "w": ("workers", r.WORKER.decode),
        "l": ("locks", r.LOCK.decode),
        "b": ("buckets", r.BUCKET.decode),
        "s": ("places", r.PLACES.decode),
        "c": ("marks", lambda data: r.MARK.decode(data).mark),
        "p": ("pauses", r.PAUSE.decode),
        "g": ("progress", r.PROGRESS.decode),
    }

    def _store_record(self, id: str, seq: int, data: bytes) -> None:
        if not data:
            self.records.pop(id, None)
            self.kept.pop(id, None)
            self.unreleased.pop(id, None)
            return
        rec = r.RECORD.decode(data)
        self.records[id] = rec
        kept = r.kept_of(rec)
        if kept is None:
            self.kept.pop(id, None)  # a requeue forgets the outcome
        else:
            self.kept[id] = kept
        if rec.linking if rec.state in r.LIVE else (rec.followers or rec.joins):
            self.unreleased.setdefault(id, time.monotonic())
        else:
            self.unreleased.pop(id, None)
        if rec.state == "pending":
            heapq.heappush(self.scheduled, (rec.due, id, seq))
        elif rec.state == "leased":
            heapq.heappush(self.leases, (rec.lease_until, id, seq))

    def seq_of(self, subject: str) -> int:
        """The sequence a write to ``subject`` expects (0: empty)."""
        return self.seen.get(subject, 0)

    def current(self, id: str, seq: int) -> r.Record | None:
        """The record of ``id`` if the view still holds it at ``seq`` (heap entries)."""
        if self.seen.get(self.subjects.message(id)) != seq:
            return None
        return self.records.get(id)

    def prune(self) -> None:
        """Forget what the view keeps of absent records (the sequences of deleted subjects,
        other objects' ticks, stale heap entries), so that a long-lived object does not
        grow with everything it ever saw. Safe: a write to a forgotten subject that still
        holds a delete marker is refused once and refreshed."""
        present: dict[str, Any] = {"m": self.records, "e": None}
        present.update({kind: getattr(self, table) for kind, (table, _) in self._tables.items()})
        keep: dict[str, int] = {}
        for subject, seq in self.seen.items():
            named = self.subjects.split(subject)
            if named is None or named[0] == "e":
                continue
            if named[0] == "t" and subject != self.tick_subject:
                continue
            held = present.get(named[0])
            if named[0] == "t" or (held is not None and named[1] in held):
                keep[subject] = seq
        self.seen = keep
        self.scheduled = [x for x in self.scheduled if self.current(x[1], x[2]) is not None]
        heapq.heapify(self.scheduled)
        self.leases = [x for x in self.leases if self.current(x[1], x[2]) is not None]
        heapq.heapify(self.leases)
        for queue, heap in list(self.ready.items()):
            alive = [x for x in heap if self.current(x[2], x[3]) is not None]
            if alive:
                heapq.heapify(alive)
                self.ready[queue] = alive
            else:
                del self.ready[queue]

    # change notification ---------------------------------------------------------------

    def changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_change(self, timeout: float) -> None:
        event = self._changed
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await event.wait()
        except TimeoutError:
            pass

    # fetch's indexes -----------------------------------------------------------------

    def promote(self, now: float) -> None:
        """Move the pending records due by ``now`` into their queue's ready heap."""
        scheduled = self.scheduled
        while scheduled and scheduled[0][0] <= now:
            due, id, seq = heapq.heappop(scheduled)
            rec = self.current(id, seq)
            if rec is not None and rec.state == "pending":
                heap = self.ready.setdefault(rec.queue, [])
                heapq.heappush(heap, (-rec.priority, due, id, seq))

    def next_due(self) -> float | None:
        """When the next scheduled record or lease falls due, if any."""
        times = [self.scheduled[0][0]] if self.scheduled else []
        if self.leases:
            times.append(self.leases[0][0])
        return min(times) if times else None

    def lapsed(self, now: float, limit: int) -> list[tuple[str, int, r.Record]]:
        """Up to ``limit`` leased records whose lease ran out by ``now``: (id, seq, record).
        Their heap entries are taken; a record still leased at that seq is pushed back by
        the write that takes it over (or by the next delivery)."""
        out: list[tuple[str, int, r.Record]] = []
        leases = self.leases
        while leases and leases[0][0] <= now and len(out) < limit:
            _, id, seq = heapq.heappop(leases)
            rec = self.current(id, seq)
            if rec is None or rec.state != "leased":
                continue
            if rec.lease_until > now:  # cannot happen (an extend writes a new seq)
                heapq.heappush(leases, (rec.lease_until, id, seq))
                continue
            out.append((id, seq, rec))
        return out

    def candidates(self, queue: str, limit: int) -> list[tuple[str, int, r.Record]]:
        """Up to ``limit`` due pending records of ``queue``, best first, taken off its heap."""
        heap = self.ready.get(queue)
        out: list[tuple[str, int, r.Record]] = []
        while heap and len(out) < limit:
            _, _, id, seq = heapq.heappop(heap)
            rec = self.current(id, seq)
            if rec is not None and rec.state == "pending":
                out.append((id, seq, rec))
        return out

    def put_back(self, taken: Iterable[tuple[str, int, r.Record]]) -> None:
        """Return candidates that were not leased to their heap (still at their seq)."""
        for id, seq, rec in taken:
            if self.current(id, seq) is rec and rec.state == "pending":
                heap = self.ready.setdefault(rec.queue, [])
                heapq.heappush(heap, (-rec.priority, rec.due, id, seq))
            elif self.current(id, seq) is rec and rec.state == "leased":
                heapq.heappush(self.leases, (rec.lease_until, id, seq))

    # clock ---------------------------------------------------------------------------

    def clock(self) -> float | None:
        """The server's time now, from the last tick's stamp (None before the first), never
        below a time already given."""
        if self._offset is None:
            return None
        now = max(time.monotonic() + self._offset, self._latest)
        self._latest = now
        return now

    def clock_stale(self) -> bool:
        return self._offset is None or time.monotonic() - self._sampled > CLOCK_FRESH


async def refresh(js: JetStreamContext, view: View, subjects: Iterable[str]) -> None:
    """Read the subjects' last messages from the server (direct gets, concurrently) into the
    view: after a compare-and-set refused because the view was behind."""
    names = list(dict.fromkeys(subjects))

    async def one(subject: str) -> None:
        try:
            msg = await js.get_msg(view.subjects.stream, subject=subject, direct=True)
        except NotFoundError:
            view.forget(subject)
            return
        except nats.errors.Error as exc:
            raise BackendError(f"reading {subject} failed: {exc or type(exc).__name__}") from None
        if msg.seq is not None:
            view.apply(subject, msg.seq, msg.data)

    await asyncio.gather(*(one(s) for s in names))
