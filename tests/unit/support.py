"""Helpers the unit tests share: waiting on a condition, and promises settled by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pigeon import Promise


async def eventually(
    condition: Callable[[], object], timeout: float = 5.0, every: float = 0.002
) -> None:
    """Wait until ``condition()`` is true, looking every ``every`` seconds (0: every
    event-loop iteration); fail the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(every)


class Deferred:
    """A local promise that the test settles by hand (JavaScript's ``withResolvers``)."""

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.promise: Promise[Any] = Promise.resolve(None).then(lambda _: self.future)

    def resolve(self, value: Any) -> None:
        self.future.set_result(value)

    def reject(self, error: BaseException) -> None:
        self.future.set_exception(error)

    async def settled(self) -> None:
        """Return once the promise has settled (whichever way)."""
        try:
            await self.promise
        except Exception:
            pass


def rejected(error: BaseException) -> Promise[Any]:
    """A local promise that rejects with ``error``."""

    def throw(_: object) -> Any:
        raise error

    return Promise.resolve(None).then(throw)


async def outcome(promise: Promise[Any]) -> tuple[bool, Any]:
    """(True, value) or (False, exception): how ``promise`` settled."""
    try:
        return True, await promise
    except Exception as exc:
        return False, exc
