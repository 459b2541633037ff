"""Retrying a call while a NATS server restarts or a cluster elects a leader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    attempt: Callable[[], Awaitable[T]],
    within: float = 30.0,
    errors: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """``attempt()``'s result once it stops raising one of ``errors`` (a leader election
    or a restart takes a few seconds), or its last error once ``within`` seconds have
    passed. Any other error fails at once."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await attempt()
        except errors:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
