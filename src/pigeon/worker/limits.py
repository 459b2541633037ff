"""Applying rate and concurrency limits on a worker, through the backend, for every worker.

Before a limited task starts, the ``Gate`` asks the backend for a place (``acquire``, for
``limit=``) and then a start slot (``take``, for ``rate=``). A slot no more than ``HOLD``
seconds away is reserved and waited for here, holding the message (its lease is kept as for
a running task); a farther one, or no free place, defers the message: it goes back to the
backend, due again when a slot or a place is likely (``release`` with a delay: no attempt
is spent and no failure counted). Over the limit, messages wait; they never fail.

Places are leased: the gate renews the places of running messages a third of the way
through their ttl (one ``acquire`` call for all), so a worker that dies loses them within
one lease, and gives each back (``release_slots``) as soon as its run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

from pigeon.backends.base import Backend
from pigeon.batching import Batcher
from pigeon.limits import TaskLimits
from pigeon.message import Delivery, Slot, Take

log = logging.getLogger("pigeon.worker")

#: The furthest ahead (seconds) a worker reserves a start slot and waits for it in place.
HOLD = 1.0
#: How long a message that found no free place waits before it is tried again (seconds).
PLACE_RETRY = (0.05, 0.25)


class Deferred(Exception):
    """The message may not start yet: give it back to be due again in ``delay`` seconds."""

    def __init__(self, delay: float, why: str) -> None:
        super().__init__(why)
        self.delay = delay
        self.task = ""  # the message's task and queue, set by the executor (for events)
        self.queue = ""


class Gate:
    """The limits of one worker's runs: places held, and slots taken, in batched calls."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._take: Batcher[Take, float] = Batcher(backend.take)
        self._acquire: Batcher[Slot, bool] = Batcher(backend.acquire)
        self._held: dict[str, Slot] = {}  # holder -> place, while its run lasts
        self._renewer: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def admit(
        self, limits: TaskLimits, d: Delivery, lease: float, bucket: str, place: str
    ) -> AsyncIterator[None]:
        """Hold the message's place and start slot for the body of the ``async with``;
        raises ``Deferred`` when it may not start now."""
        slot: Slot | None = None
        if limits.limit is not None:
            slot = Slot(place, f"{d.id}:{d.attempt}", limits.limit, lease)
            if not await self._acquire.submit(slot):
                raise Deferred(random.uniform(*PLACE_RETRY), f"{slot.name} is at its limit")
            self._held[slot.holder] = slot
            self._ensure_renewer()
        try:
            if limits.interval is not None:
                take = Take(bucket, limits.interval, limits.burst, HOLD)
                wait = await self._take.submit(take)
                if wait > HOLD:
                    # Come back when a reservation fits, spread over one interval.
                    again = wait - HOLD + random.uniform(0, min(limits.interval, HOLD))
                    raise Deferred(again, f"{take.bucket} is over its rate")
                if wait > 0:
                    await asyncio.sleep(wait)
            yield
        finally:
            if slot is not None:
                self._held.pop(slot.holder, None)
                try:
                    await self._backend.release_slots([slot])
                except Exception as exc:  # it runs out by itself after its ttl
                    log.warning("giving back a place of %s failed: %s", slot.name, exc)

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        while self._held:
            ttl = min(s.ttl for s in self._held.values())
            await asyncio.sleep(max(ttl / 3, 0.02))
            held = list(self._held.values())
            if not held:
                break
            try:
                kept = await self._backend.acquire(held)
            except Exception as exc:
                log.warning("renewing %d places failed, retrying: %s", len(held), exc)
                continue
            for slot, ok in zip(held, kept, strict=True):
                if not ok and slot.holder in self._held:
                    log.warning("the place of %s in %s ran out", slot.holder, slot.name)

    def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
