"""Waiting on a condition with a deadline, never a blind sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pigeon.backends import Backend
from pigeon.message import Delivery

from .messages import QUEUE

T = TypeVar("T")

DEADLINE = 5.0


async def eventually(
    check: Callable[[], Awaitable[T]], what: str, timeout: float = DEADLINE, interval: float = 0.01
) -> T:
    """The first truthy value ``check`` returns; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout}s still waiting for {what} (last: {result!r})")
        await asyncio.sleep(interval)


async def clock_passes(backend: Backend, moment: float) -> None:
    """Returns once the backend's clock reads later than ``moment``."""

    async def passed() -> bool:
        return await backend.time() > moment

    await eventually(passed, f"the backend clock to pass {moment}", interval=0.005)


async def fetch_eventually(
    backend: Backend,
    queues: Sequence[str] = (QUEUE,),
    limit: int = 1,
    worker: str = "w",
    lease: float | None = None,
) -> list[Delivery]:
    """Polls ``fetch`` until it leases something."""

    async def fetch() -> list[Delivery]:
        return await backend.fetch(queues, limit, worker, lease=lease)

    return await eventually(fetch, f"a delivery from {list(queues)}")
