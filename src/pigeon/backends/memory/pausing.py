"""The memory backend's paused queues: ``pause``, ``resume``, ``paused``.

A mixin of :class:`pigeon.backends.memory.backend.MemoryBackend`; it keeps the pauses (made
by its ``__init__``) and reads the backend's clock through ``_now`` (``Coordination``'s). The
fetch skips a queue that ``_is_paused`` names; like the rest of the backend, every operation
runs without awaiting in between, so it is atomic.
"""

from __future__ import annotations

from collections.abc import Collection

from pigeon.backends.memory.coordination import Coordination
from pigeon.backends.shared import check_pause, until_passed
from pigeon.message import Pause


class Pausing(Coordination):
    """Paused queues, on top of the coordination operations (which own ``_notify``)."""

    def __init__(self) -> None:
        super().__init__()
        self._pauses: dict[str, Pause] = {}

    def _is_paused(self, queue: str, now: float) -> bool:
        """Whether ``queue`` is paused at ``now`` (the fetch's test: a dict lookup)."""
        pause = self._pauses.get(queue)
        return pause is not None and (pause.until is None or pause.until > now)

    def _pauses_end(self, queues: Collection[str], now: float) -> float | None:
        """The earliest time one of ``queues`` resumes by itself, if any is paused so."""
        ends = [p.until for q in queues if (p := self._pauses.get(q)) is not None]
        return min((u for u in ends if u is not None and u > now), default=None)

    async def pause(
        self, queue: str, reason: str | None = None, until: float | None = None
    ) -> Pause:
        check_pause(queue, until)
        now = self._now()
        if until is not None and until <= now:
            raise until_passed(queue, until, now)
        held = self._pauses.get(queue)
        since = held.since if held is not None and self._is_paused(queue, now) else now
        pause = self._pauses[queue] = Pause(queue, reason, since, until)
        self._notify()  # a waiting fetch learns when the pause ends
        return pause

    async def resume(self, queue: str) -> bool:
        check_pause(queue, None)
        was = self._is_paused(queue, self._now())
        self._pauses.pop(queue, None)
        self._notify()  # a fetch waiting on the queue looks again
        return was

    async def paused(self) -> dict[str, Pause]:
        return self._live_pauses(self._now())

    def _live_pauses(self, now: float) -> dict[str, Pause]:
        """The pauses not expired at ``now``, by queue name."""
        return {q: p for q, p in sorted(self._pauses.items()) if p.until is None or p.until > now}
