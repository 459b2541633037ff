"""asyncio helpers shared by the backends and the worker.

Every event-loop iteration on the path of a message costs a few microseconds, and a round
trip (send -> fetch -> run -> settle -> notify) crosses many of them in two processes; these
helpers do what asyncio's own would do with fewer iterations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def shielded(
    coro: Coroutine[Any, Any, T], orphaned: Callable[[asyncio.Task[T]], None] | None = None
) -> T:
    """Await ``coro`` in a task of its own that our caller's cancellation does not reach, as
    ``asyncio.shield(asyncio.ensure_future(coro))`` does, but waking the caller one
    event-loop iteration sooner: the task hands its result over itself as it returns,
    instead of through shield's chain of done callbacks (two iterations).

    If the caller is cancelled, the task runs on: ``orphaned(task)`` is called at once (to
    clean up after it when it ends, or to keep track of it); the task's failure, if it
    fails, is retrieved so that asyncio does not report it as never retrieved.
    """
    loop = asyncio.get_running_loop()
    outer: asyncio.Future[T] = loop.create_future()
    task = loop.create_task(_hand_over(coro, outer))
    try:
        return await outer
    except asyncio.CancelledError:
        task.add_done_callback(_retrieve)
        if orphaned is not None:
            orphaned(task)
        raise
    except BaseException:
        task.add_done_callback(_retrieve)  # the caller has the failure: the task's is a copy
        raise


async def _hand_over(coro: Coroutine[Any, Any, T], outer: asyncio.Future[T]) -> T:
    try:
        result = await coro
    except asyncio.CancelledError:
        if not outer.done():
            outer.cancel()
        raise
    except BaseException as exc:
        if not outer.done():
            outer.set_exception(exc)
        raise
    if not outer.done():
        outer.set_result(result)
    return result


def cancelling() -> bool:
    """Whether a cancellation of the running task itself is pending (as opposed to the
    cancellation of something it awaited, which reaches it as CancelledError too)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
