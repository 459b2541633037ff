"""The App the metrics tests run in real worker processes (URL from PIGEON_URL)."""

from __future__ import annotations

import asyncio
import os

import pigeon


def register(app: pigeon.App) -> pigeon.App:
    """Register the metrics tests' tasks on ``app`` (the workers' and the tests' own)."""
    for fn, options in TASKS:
        app.task(**options)(fn)
    return app


async def ok(x: int) -> int:
    return x


async def fail() -> None:
    raise ValueError("always")


async def flaky() -> str:
    """Fails its first attempt (KeyError), succeeds on the retry."""
    if pigeon.current().failures == 0:
        raise KeyError("first attempt")
    return "ok"


async def slow_flaky(seconds: float) -> str:
    """Runs ``seconds`` and fails its first attempt, then succeeds at once on the retry."""
    if pigeon.current().failures == 0:
        await asyncio.sleep(seconds)
        raise KeyError("first attempt")
    return "ok"


async def raise_named(name: str) -> None:
    """Raises an exception whose type is named ``name`` (one ``error`` label value each)."""
    raise type(name, (Exception,), {})("named")


async def hold(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def pid(seconds: float) -> int:
    """Runs ``seconds``, then returns the pid of the worker process that ran it."""
    await asyncio.sleep(seconds)
    return os.getpid()


TASKS = [
    (ok, {"name": "m.ok"}),
    (fail, {"name": "m.fail"}),
    (flaky, {"name": "m.flaky", "retries": 1, "retry_backoff": 0.01, "retry_backoff_max": 0.01}),
    (
        slow_flaky,
        {"name": "m.slowflaky", "retries": 1, "retry_backoff": 0.01, "retry_backoff_max": 0.01},
    ),
    (raise_named, {"name": "m.raise", "queue": "errors"}),
    (hold, {"name": "m.hold"}),
    (pid, {"name": "m.pid"}),
]

app = register(pigeon.App())
