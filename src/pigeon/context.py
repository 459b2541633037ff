"""``pigeon.current()``: what a running task can know about the message it is running."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from pigeon.errors import PigeonError
from pigeon.message import Progress

#: The header in which a periodic tick carries its scheduled time (epoch seconds).
TICK_HEADER = "pigeon-tick"


@dataclass
class Current:
    """The message a task is running for: its id, attempt, and whether it was cancelled.

    ``cancelled`` becomes True while the task runs when someone cancels the message
    (``promise.cancel()``, ``pigeon cancel ID``): a sync task should check it and return
    early; an async task gets ``asyncio.CancelledError`` instead. Either way the message's
    outcome is ``cancelled``.
    """

    id: str
    task: str
    queue: str
    attempt: int
    failures: int
    headers: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False
    reporter: Callable[[Progress], None] | None = field(default=None, repr=False)

    def progress(self, fraction: float | None = None, text: str = "") -> None:
        """Tell the sender how far the task has got: ``fraction`` 0.0-1.0 (None: unknown)
        and/or a line of ``text``. The sender sees it as ``promise.progress`` and through
        ``promise.on_progress(cb)``. Cheap to call often: reports are coalesced (the latest
        one per message goes to the backend, a few times a second). Callable from async
        and sync tasks alike.
        """
        if fraction is not None:
            if isinstance(fraction, bool) or not isinstance(fraction, int | float):
                raise TypeError(f"progress fraction must be a number 0.0-1.0, not {fraction!r}")
            if not (0.0 <= fraction <= 1.0) or math.isnan(fraction):
                raise ValueError(f"progress fraction must be between 0.0 and 1.0, not {fraction}")
            fraction = float(fraction)
        if not isinstance(text, str):
            raise TypeError(f"progress text must be a str, not {type(text).__name__}")
        if self.reporter is not None:
            self.reporter(Progress(self.id, fraction, text, time.time()))

    @property
    def tick(self) -> float | None:
        """For a periodic task, the scheduled time of this tick (epoch seconds); else None."""
        value = self.headers.get(TICK_HEADER)
        return float(value) if value is not None else None


class Cancellation:
    """One running message's cancellation, shared by the worker that learns of it and the
    executor that runs the task.

    ``request()`` (on the event loop) marks it requested, sets ``current.cancelled`` for the
    task to see (a thread may read it: a bool attribute is set atomically), and cancels the
    asyncio task running an async function. A request that comes before the run starts is
    seen by the executor, which then does not run the task at all.
    """

    __slots__ = ("current", "requested", "task")

    def __init__(self) -> None:
        self.requested = False
        self.current: Current | None = None
        self.task: asyncio.Task[object] | None = None  # set while an async function runs

    def request(self) -> None:
        if self.requested:
            return
        self.requested = True
        if self.current is not None:
            self.current.cancelled = True
        if self.task is not None:
            self.task.cancel()


_current: ContextVar[Current | None] = ContextVar("pigeon_current", default=None)


def current() -> Current:
    """The running message. Raises PigeonError outside a task running on a worker."""
    value = _current.get()
    if value is None:
        raise PigeonError("pigeon.current() is only available inside a task run by a worker")
    return value
