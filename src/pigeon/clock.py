"""The clock that times are read on and waited on: the system's, or a test's.

The memory backend reads its time from a ``Clock`` (when a message falls due, a lease or an
expiry runs out, a lock or a rate bucket moves on), and the scheduler waits between its
rounds on the same clock. In production that is ``SYSTEM``: ``time.time()`` and the event
loop's timers. ``pigeon.testing`` gives both a ``ManualClock``, which stands still until the
test moves it, so that a retry after a minute's backoff or an hourly tick takes
milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Where times come from (epoch seconds), and how long waits on them end."""

    def time(self) -> float:
        """The current time, in seconds since the epoch."""
        ...

    def listen(self, moved: Callable[[], None]) -> None:
        """Call ``moved`` whenever the time jumps (never, on the system clock), so that
        whoever waits for a time to come can look again."""
        ...

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait until ``event`` is set or ``seconds`` have passed on this clock; whether
        ``event`` is set. A wait may end early (when the time jumps): callers look again."""
        ...


class SystemClock:
    """The real clock: ``time.time()`` and the event loop's timers."""

    #: ``time.time`` itself: the memory backend calls it on every operation.
    time = staticmethod(time.time)

    def listen(self, moved: Callable[[], None]) -> None:
        return None  # real time never jumps forward in one step

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            pass
        return event.is_set()


#: The clock every component uses unless it is given another.
SYSTEM = SystemClock()


class ManualClock:
    """A clock that stands still until the test moves it (``advance``, ``set``).

    It starts at the real time (or ``start``), so dates look as usual. Move it on the event
    loop the worker runs on (``InProcessWorker.advance`` and ``advance_sync`` do).
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._listeners: list[Callable[[], None]] = []
        self._waiters: set[asyncio.Future[None]] = set()
        #: Waits that a move ended and that have not resumed yet.
        self.woken = 0

    def __repr__(self) -> str:
        return f"<ManualClock {self._now:.3f}>"

    def time(self) -> float:
        return self._now

    def listen(self, moved: Callable[[], None]) -> None:
        self._listeners.append(moved)

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Until ``event`` is set or the clock moves (the waiter looks at the time again:
        on a clock that jumps, every move may be the one it waits for)."""
        if event.is_set() or seconds <= 0:
            return event.is_set()
        moved: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(moved)
        watch = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait((moved, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if moved.done() and not moved.cancelled():
                self.woken -= 1
            else:
                self._waiters.discard(moved)
                moved.cancel()
        return event.is_set()

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward in one jump (see ``InProcessWorker.advance``
        for a move that runs what falls due on the way)."""
        if seconds < 0:
            raise ValueError(f"a clock moves forward: advance({seconds})")
        self.set(self._now + seconds)

    def set(self, moment: float) -> None:
        """Move the clock to ``moment`` (epoch seconds, not before now) and wake waiters."""
        if moment < self._now:
            raise ValueError(f"a clock moves forward: {moment} is before {self._now}")
        for moved in self._waiters:
            if moved.get_loop() is not _running_loop():
                # Futures and the backend's events belong to their loop's thread.
                raise RuntimeError(
                    "move a ManualClock on the event loop that waits on it; from a sync"
                    " test, use pigeon_worker.advance_sync(seconds)"
                )
        self._now = moment
        waiters, self._waiters = self._waiters, set()
        for moved in waiters:
            if not moved.done():
                moved.set_result(None)
                self.woken += 1
        for listener in self._listeners:
            listener()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


__all__ = ["SYSTEM", "Clock", "ManualClock", "SystemClock"]
