"""The App the end-to-end tests run in real worker processes (URL from PIGEON_URL)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pigeon


def _record(marker: str, line: str) -> None:
    with Path(marker).open("a") as f:
        f.write(line + "\n")


def register(app: pigeon.App) -> pigeon.App:
    """Register the end-to-end tasks on ``app`` (the workers' and the tests' own)."""
    for fn, options in TASKS:
        app.task(**options)(fn)
    return app


async def add(a: int, b: int) -> int:
    return a + b


async def slow(marker: str, seconds: float) -> str:
    """Records each start in ``marker`` (one line per attempt), then sleeps."""
    _record(marker, f"{os.getpid()} {pigeon.current().attempt}")
    await asyncio.sleep(seconds)
    return "done"


def slow_sync(marker: str, seconds: float) -> str:
    _record(marker, f"{os.getpid()} {pigeon.current().attempt}")
    time.sleep(seconds)
    return "done"


def crash(marker: str) -> None:
    """Kills the worker process running it, every time."""
    _record(marker, str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


TASKS = [
    (add, {"name": "e2e.add"}),
    (slow, {"name": "e2e.slow", "lease": 1.0}),
    (slow_sync, {"name": "e2e.slow_sync", "lease": 1.0}),
    (crash, {"name": "e2e.crash", "lease": 0.5, "max_deliveries": 3}),
]

app = register(pigeon.App())
