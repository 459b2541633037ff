"""The App's home event loop: where sync code, async code and worker threads meet.

An App lives on one asyncio event loop, its home: the first loop that uses it, or, when it is
first used from sync code, a loop on a background thread of its own (the "portal"). Every
backend call runs on the home loop; ``await`` from another loop (``call``) and blocking calls
from sync code (``call_sync``) are bridged to it, so one App serves all three alike.

A new home (the old loop was closed, as ``asyncio.run`` does) drops everything bound to the
old loop: ``Home`` calls the ``moved`` callback its owner gives it, under its lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pigeon.errors import PigeonError, Timeout

T = TypeVar("T")


class Home:
    """One App's home loop, and the bridges to it from other loops and threads."""

    def __init__(self, moved: Callable[[], None]) -> None:
        self._moved = moved
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._portal: threading.Thread | None = None
        # What ``start`` runs on the home loop; the owner cancels it on close.
        self.background: set[asyncio.Future[Any]] = set()

    @property
    def closed(self) -> bool:
        """Whether there is no live home loop (never had one, or it was closed)."""
        return self.loop is None or self.loop.is_closed()

    def for_async(self) -> asyncio.AbstractEventLoop:
        """The home loop, adopting the running one when there is none (async code only)."""
        running = asyncio.get_running_loop()
        with self._lock:
            if self.closed:
                self._set(running)
            assert self.loop is not None
            return self.loop

    def for_sync(self) -> asyncio.AbstractEventLoop:
        """The home loop, starting one on a thread of its own when there is none."""
        with self._lock:
            if self.closed:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._portal = threading.Thread(target=serve, name="pigeon-app", daemon=True)
                self._portal.start()
                ready.wait()
                self._set(loop)
            assert self.loop is not None
            return self.loop

    def _set(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.background = set()
        self._moved()

    def here(self) -> bool:
        """Whether this thread runs the home loop (adopting the running loop as home when
        there is none, or the old home was closed)."""
        running = running_loop()
        if running is None:
            return False
        with self._lock:
            if self.closed:
                self._set(running)
            return self.loop is running

    def on_home(self) -> bool:
        """Whether the running loop is the home loop (adopting nothing)."""
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    async def call(self, coro: Awaitable[T]) -> T:
        """Await ``coro`` on the home loop, from whatever loop we are on."""
        home = self.for_async()
        if home is asyncio.get_running_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_wrap(coro), home))

    def call_sync(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coro`` on the home loop and block for it (sync code only).

        Raises pigeon.Timeout after ``timeout`` seconds, and PigeonError when called on the
        home loop itself (that would block the loop it waits for: use ``await``).
        """
        if self.on_home():
            _close(coro)
            raise PigeonError(
                "a blocking call (like promise.result()) was made on the event loop that"
                " pigeon runs on; it would wait forever. Use `await promise` instead"
            )
        home = self.for_sync()
        future = asyncio.run_coroutine_threadsafe(_wrap(coro), home)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Timeout(f"no outcome within {timeout} s; the work goes on") from None

    def start(self, coro: Awaitable[T]) -> asyncio.Future[T] | concurrent.futures.Future[T]:
        """Run ``coro`` in the background on the home loop; owned here until ``cancel_all``."""
        if self.here():
            task = asyncio.ensure_future(coro)
            self.background.add(task)
            task.add_done_callback(self.background.discard)
            return task
        return asyncio.run_coroutine_threadsafe(_wrap(coro), self.for_sync())

    def cancel_background(self) -> None:
        """Cancel what ``start`` runs (on the home loop, when the App closes)."""
        for task in list(self.background):
            task.cancel()

    def stop_portal(self) -> None:
        """Stop the home loop's own thread, if it has one (sync code, after close); a later
        use starts a fresh home loop."""
        if self._portal is None or self.loop is None:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._portal.join(5)
        self._portal = None
        self.loop.close()


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop, or None outside one."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


def _close(coro: Awaitable[Any]) -> None:
    if asyncio.iscoroutine(coro):
        coro.close()
