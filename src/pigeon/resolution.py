"""How a promise resolves, as plain values: no promise, backend or App here.

A promise's outcome, once known here, is ``Known``: ``(fulfilled, value or exception)``.
This module turns a stored ``Result`` into one (the value it decodes to, or the exception a
rejection raises), names its ``Status``, replays it, reads one off a finished future, and
waits for a promise that has no App (only plain values in it) on a loop of its own.
``pigeon.promise`` builds its classes on these.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable
from typing import Any, Literal, TypeVar

import msgspec

from pigeon.codec import TaskCodec
from pigeon.errors import Cancelled, TaskError, Timeout
from pigeon.message import Failure, Result

T = TypeVar("T")

Status = Literal["pending", "succeeded", "failed", "cancelled", "dead"]

#: (fulfilled, the value or the exception): an outcome known here.
Known = tuple[bool, Any]


def status_of(known: Known | None) -> Status:
    """The status an outcome names (``pending`` while it is not known here)."""
    if known is None:
        return "pending"
    fulfilled, value = known
    if fulfilled:
        return "succeeded"
    if isinstance(value, Cancelled):
        return "cancelled"
    if isinstance(value, TaskError) and value.state == "dead":
        return "dead"
    return "failed"


def resolve_result(result: Result, codec: TaskCodec | None) -> Known:
    """A stored outcome as known here: a succeeded one's value, decoded as the task's result
    (plain JSON without a ``codec``), or the exception a rejection raises."""
    if result.state == "succeeded":
        raw = bytes(result.value) if result.value is not None else b"null"
        value = msgspec.json.decode(raw) if codec is None else codec.decode_result(raw)
        return True, value
    return False, outcome_error(result)


def outcome_error(result: Result) -> Exception:
    """The exception a rejected promise raises for a stored outcome."""
    if result.state == "cancelled":
        how = result.error.message if result.error is not None else "cancelled before it ran"
        return Cancelled(f"message {result.id} was {how}")
    error = result.error or Failure("UnknownError", "the task failed without an error record")
    return TaskError(
        error.type, error.message, error.traceback, error.id or result.id, result.state
    )


def replay(known: Known) -> Any:
    """The value of a known outcome, or raise its exception."""
    fulfilled, value = known
    if fulfilled:
        return value
    raise value


def finished(future: asyncio.Future[Any] | concurrent.futures.Future[Any]) -> Known | None:
    """The outcome of a computation that has finished (None while it runs, or when it was
    cancelled)."""
    if not future.done() or future.cancelled():
        return None
    error = future.exception()
    return (True, future.result()) if error is None else (False, error)


def run_detached(coro: Awaitable[T], timeout: float | None) -> T:
    """Wait for a promise without an App (only plain values in it) in a loop of its own.
    Raises pigeon.Timeout when ``timeout`` seconds pass first."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    try:
        return asyncio.run(bounded())
    except TimeoutError:
        raise Timeout(f"no outcome within {timeout} s") from None
