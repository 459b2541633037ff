"""``pigeon.current()``: what a running task can know about the message it is running."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

from pigeon.errors import PigeonError


@dataclass
class Current:
    """The message a task is running for: its id, attempt, and whether it was cancelled."""

    id: str
    task: str
    queue: str
    attempt: int
    failures: int
    headers: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False


_current: ContextVar[Current | None] = ContextVar("pigeon_current", default=None)


def current() -> Current:
    """The running message. Raises PigeonError outside a task running on a worker."""
    value = _current.get()
    if value is None:
        raise PigeonError("pigeon.current() is only available inside a task run by a worker")
    return value
