"""Progress reports of running tasks, coalesced on their way to the backend.

``pigeon.current().progress(...)`` may be called thousands of times a second, from the
event loop or from a task's thread; only the latest report of each message matters. The
``Reporter`` keeps that one and sends what it holds in one ``report`` call, at once when it
is idle and then at most every ``EVERY`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from pigeon.backends.base import Backend
from pigeon.message import Progress

log = logging.getLogger("pigeon.worker")

#: The shortest time between two ``report`` calls of one worker (seconds).
EVERY = 0.1
#: How long a progress report is kept after its last update (seconds).
PROGRESS_TTL = 3600.0


class Reporter:
    def __init__(self, backend: Backend) -> None:
        """Made on the worker's event loop, in its thread."""
        self._backend = backend
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._latest: dict[str, Progress] = {}
        self._runner: asyncio.Task[None] | None = None

    def __call__(self, progress: Progress) -> None:
        """Record a report (from any thread)."""
        if threading.get_ident() == self._thread:
            self._add(progress)
        else:
            self._loop.call_soon_threadsafe(self._add, progress)

    def _add(self, progress: Progress) -> None:
        self._latest[progress.id] = progress
        if self._runner is None:
            self._runner = self._loop.create_task(self._send())

    async def _send(self) -> None:
        try:
            while self._latest:
                batch = list(self._latest.values())
                self._latest.clear()
                try:
                    await self._backend.report(batch, PROGRESS_TTL)
                except Exception as exc:  # progress is advisory: the next report replaces it
                    log.warning("reporting progress of %d messages failed: %s", len(batch), exc)
                await asyncio.sleep(EVERY)
        finally:
            self._runner = None

    async def drain(self) -> None:
        while self._runner is not None:
            await asyncio.shield(self._runner)
