"""What every part of the NATS backend stands on: the connection, the stream's view, the
server clock and the compare-and-set step (the base class of ``backend.NatsBackend``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from pigeon.backends.nats import records as r
from pigeon.backends.nats.batch import Write
from pigeon.backends.nats.connections import open_stream, parse_url, redact_url
from pigeon.backends.nats.settling import release_rest
from pigeon.backends.nats.view import BARRIER_TIMEOUT, View
from pigeon.backends.nats.writes import attempt, each, publish_one
from pigeon.errors import BackendError

T = TypeVar("T")

#: Seconds a tombstone may list unreleased followers before another object's fetch steps in.
RESUME_AFTER = 5.0
#: Tombstones one fetch finishes releasing at most.
RESUME_AT_ONCE = 4
#: Seconds a backend object's tick subject is kept after its last barrier.
TICK_TTL = {"Nats-TTL": "60"}


class _Lane:
    """The steps of this object queued on one record (``Core._step``)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Core:
    """The connection, the view and the steps every operation is made of."""

    def __init__(self, url: str) -> None:
        self.target = parse_url(url)
        self.url = redact_url(url)
        self.subjects = r.Subjects(self.target.stream)
        self._client = uuid.uuid4().hex
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._view: View | None = None
        self._lanes: dict[str, _Lane] = {}
        self._cleanups: set[asyncio.Future[None]] = set()

    # lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        if self._nc is not None:
            return
        opened = await open_stream(self.target, self.url)
        view = View(self.subjects, self._client)
        try:
            await view.start(opened.js)
        except BaseException:
            await opened.nc.close()
            raise
        self._nc, self._js, self._view = opened.nc, opened.js, view
        await self._fresh()

    async def close(self) -> None:
        nc, view = self._nc, self._view
        self._nc = self._js = self._view = None
        if view is not None:
            await view.stop()
        if nc is not None:
            await nc.close()

    async def time(self) -> float:
        return await self._now()

    # parts -----------------------------------------------------------------------------

    @property
    def view(self) -> View:
        if self._view is None:
            raise BackendError(f"the NATS backend {self.url} is not open: call open() first")
        return self._view

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise BackendError(f"the NATS backend {self.url} is not open: call open() first")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise BackendError(f"the NATS backend {self.url} is not open: call open() first")
        return self._js

    # time and barriers -----------------------------------------------------------------

    async def _fresh(self) -> float:
        """Pass a barrier (see ``view``): the view then holds everything stored before
        this call, and the clock a fresh sample. Returns the server's now."""
        view = self.view
        seq = await publish_one(self.nc, view.tick_subject, b"", None, TICK_TTL)
        try:
            await view.reached(seq)
        except TimeoutError:
            raise BackendError(
                f"NATS {self.url}: the stream's consumer did not deliver sequence {seq} within "
                f"{BARRIER_TIMEOUT:g} s (reconnecting?)"
            ) from None
        now = view.clock()
        assert now is not None
        return now

    async def _now(self) -> float:
        """The server's now, from the clock sample (a barrier when it is stale)."""
        view = self.view
        if view.clock_stale():
            return await self._fresh()
        now = view.clock()
        assert now is not None
        return now

    # writing ---------------------------------------------------------------------------

    async def _step(
        self, step: Callable[[], Sequence[Write] | None], lane: str | None = None
    ) -> int | None:
        """Run one compare-and-set step (``writes.attempt``) and wait until the view holds
        what it stored, so this object reads its own writes. Steps of one ``lane`` (a
        record many callers of this object change at once: a bucket, a lock) run one at a
        time, so that they queue here instead of conflicting on the server."""
        if lane is None:
            return await self._attempt(step)
        gate = self._lanes.get(lane)
        if gate is None:
            gate = self._lanes[lane] = _Lane()
        gate.users += 1
        try:
            async with gate.lock:
                return await self._attempt(step)
        finally:
            gate.users -= 1
            if not gate.users:  # nobody holds or waits for it: forget it
                del self._lanes[lane]

    async def _attempt(self, step: Callable[[], Sequence[Write] | None]) -> int | None:
        seq = await attempt(self.nc, self.view, self.js, step)
        if seq is not None:
            await self.view.reached(seq)
        return seq

    async def _release_rest(self, id: str) -> None:
        """Finish the releases a settled message's tombstone still lists (see
        ``settling``), batch after batch."""
        while id in self.view.unreleased:
            now = await self._now()
            if await self._step(partial(release_rest, self.view, id, now)) is None:
                return

    async def _resume_releases(self) -> None:
        """Finish the releases that a settler left for longer than ``RESUME_AFTER``
        seconds (it died, or another object's settle is still at it)."""
        due = time.monotonic() - RESUME_AFTER
        stale = [i for i, seen in self.view.unreleased.items() if seen < due]
        for id in stale[:RESUME_AT_ONCE]:
            await self._release_rest(id)

    async def _each(self, jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        return await each(jobs) if jobs else []

    def _write(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> Write:
        """A write of ``subject`` that expects it at the sequence the view holds."""
        return Write(subject, data, self.view.seq_of(subject), headers)

    def _record(self, rec: r.Record, headers: dict[str, str] | None = None) -> Write:
        return self._write(self.subjects.message(rec.id), r.encode(rec), headers)

    def _delete(self, subject: str) -> Write:
        """A delete marker for ``subject`` (empty, kept one second)."""
        return self._write(subject, b"", r.DELETE_TTL)

    def _is_paused(self, queue: str, now: float) -> bool:
        held = self.view.pauses.get(queue)
        return held is not None and (held.pause.until is None or held.pause.until > now)
