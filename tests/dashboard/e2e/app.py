"""The App of the dashboard's browser tests, run by real ``pigeon worker`` and ``pigeon
dashboard`` processes (URL from PIGEON_URL, events on: PIGEON_EVENTS=1)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pigeon


def build(url: str | None = None, events: bool | None = None) -> pigeon.App:
    """The App with every task of these tests (the processes' is ``app``, below)."""
    app = pigeon.App(url, events=events)
    app.task(name="e2e.ok", queue="work")(ok)
    app.task(name="e2e.flaky", queue="work", retries=2, retry_backoff=0.1)(flaky)
    app.task(name="e2e.boom", queue="work", retries=0)(boom)
    app.task(name="e2e.until_fixed", queue="work", retries=0)(until_fixed)
    app.task(name="e2e.paced", queue="work", rate="20/s", limit=2)(paced)
    app.periodic(every=timedelta(minutes=1), name="e2e.minutely", queue="work")(minutely)
    return app


async def ok(n: int) -> int:
    await asyncio.sleep(0.05)
    return n * 2


async def flaky(text: str) -> str:
    """Fails its first attempt, then succeeds: one retry."""
    if pigeon.current().attempt == 1:
        raise ConnectionError("the first attempt always fails")
    return text


async def boom(text: str, password: pigeon.Secret[str]) -> None:
    raise ValueError(f"cannot handle {text}")


async def until_fixed(marker: str) -> str:
    """Dead-lettered until the file ``marker`` exists: then a requeue succeeds."""
    if not await asyncio.to_thread(Path(marker).exists):
        raise FileNotFoundError(f"{marker} is missing")
    return "fixed"


async def paced(n: int) -> int:
    return n


def minutely() -> None:
    return None


app = build()
