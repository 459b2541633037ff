"""Waiting on outcomes and progress through the backend, for every promise of an App.

``ResultWatcher`` waits for the outcomes of all the promises being awaited with one backend
``wait`` at a time; ``ProgressWatcher`` follows the progress of the promises that asked for
it with one ``progress`` call per tick. Each App has one of each, on its home event loop.
They know promises only through ``Follower`` (what the progress watcher hands reports to),
so this module sits below ``pigeon.promise``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from pigeon.aio import cancelling
from pigeon.backends.base import Backend
from pigeon.message import Progress, Result

log = logging.getLogger("pigeon")


class Follower(Protocol):
    """A promise whose progress is followed (``MessagePromise``)."""

    @property
    def kept(self) -> bool:
        """Whether the message keeps an outcome (not sent with ``fire``)."""
        ...

    async def _on_progress(self, progress: Progress) -> None: ...


class ResultWatcher:
    """Waits for the outcomes of many messages with one backend ``wait`` at a time.

    Every promise being awaited registers its id here; one loop asks the backend for all of
    them at once and resolves each as its outcome arrives. A transient backend error is
    logged and retried with backoff: a wait never fails silently and never hangs unbounded
    (callers bound it with ``result(timeout)`` or ``asyncio.timeout``).
    """

    def __init__(self, backend: Callable[[], Awaitable[Backend]]) -> None:
        self._backend = backend
        # id -> one future per awaiter (its own: a cancelled awaiter cancels nothing else)
        self._waiters: dict[str, list[asyncio.Future[Result]]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._waiting: asyncio.Task[None] | None = None  # the backend wait in flight

    async def get(self, mid: str) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        awaiters = self._waiters.get(mid)
        if awaiters is None:
            self._waiters[mid] = [future]
            if self._runner is None:
                self._runner = asyncio.get_running_loop().create_task(self._run())
            elif self._waiting is not None:
                self._waiting.cancel()  # a new id to wait for: the runner starts over with it
        else:
            awaiters.append(future)
        try:
            return await future
        finally:
            awaiters = self._waiters.get(mid)
            if awaiters is not None and future in awaiters:
                awaiters.remove(future)
                if not awaiters:
                    del self._waiters[mid]

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass

    def _resolve(self, found: dict[str, Result]) -> None:
        for mid, result in found.items():
            for future in self._waiters.pop(mid, ()):
                if not future.done():
                    future.set_result(result)

    async def _wait(self, backend: Backend, ids: list[str]) -> None:
        # The awaiters are resolved here, as the wait returns: they wake one event-loop
        # iteration after the outcome arrives, not after the runner has noticed it too.
        self._resolve(await backend.wait(ids, 5.0))

    async def _run(self) -> None:
        backoff = 0.05
        try:
            while self._waiters:
                try:
                    backend = await self._backend()
                    # The ids are taken and the wait started in one step: an id that comes
                    # later cancels this wait (get), and the next one includes it.
                    waiting = self._waiting = asyncio.ensure_future(
                        self._wait(backend, list(self._waiters))
                    )
                    try:
                        await waiting
                    except asyncio.CancelledError:
                        if waiting.cancelled() and not cancelling():
                            continue  # cancelled by get() for a new id, not us by close()
                        raise
                    finally:
                        self._waiting = None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("waiting for outcomes failed, retrying in %.2fs: %s", backoff, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.05
        finally:
            self._runner = None


class ProgressWatcher:
    """Follows the progress of many messages with one ``progress`` call per tick.

    Every ``EVERY`` seconds it asks the backend for the latest reports (and outcomes) of the
    messages followed, hands each new report to its promises, and stops following a message
    once its outcome is stored (after delivering the last report), or, for a message whose
    outcome is not kept (``result_ttl=0``), once the backend no longer holds it.
    """

    EVERY = 0.2

    def __init__(self, backend: Callable[[], Awaitable[Backend]]) -> None:
        self._backend = backend
        self._followed: dict[str, tuple[list[Follower], list[Progress | None]]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def follow(self, mid: str, promise: Follower) -> None:
        entry = self._followed.setdefault(mid, ([], [None]))
        entry[0].append(promise)
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        try:
            while self._followed:
                ids = list(self._followed)
                try:
                    backend = await self._backend()
                    # Outcomes first: the reports read after them include every report
                    # made before the outcome was stored.
                    settled = await backend.results(ids)
                    gone = set()  # no outcome kept: followed while the backend holds them
                    for mid in ids:
                        kept = any(p.kept for p in self._followed[mid][0])
                        if not kept and mid not in settled and await backend.inspect(mid) is None:
                            gone.add(mid)
                    reports = await backend.progress(ids)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("following progress failed, retrying: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
                for mid in ids:
                    promises, last = self._followed[mid]
                    report = reports.get(mid)
                    if report is not None and report != last[0]:
                        last[0] = report
                        for promise in promises:
                            await promise._on_progress(report)
                    if mid in settled or mid in gone:
                        del self._followed[mid]
                if self._followed:
                    await asyncio.sleep(self.EVERY)
        finally:
            self._runner = None
