"""``App(around_sync_run=..., around_async_run=...)``: what a worker runs each task's call
inside of (the Django integration recycles Django's database connections there). A sync
task's is called in the thread that runs the task, around its call; an async task's is
awaited on the worker's loop; both see ``pigeon.current()`` and pass results and errors
through."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import pigeon

from .conftest import StartWorker


async def test_around_sync_run_surrounds_each_sync_task_in_its_own_thread(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    seen: list[tuple[str, int, str]] = []

    def around(call: Callable[[], Any]) -> Any:
        running = pigeon.current().id
        seen.append(("before", threading.get_ident(), running))
        try:
            return call()
        finally:
            seen.append(("after", threading.get_ident(), running))

    app.around_sync_run = around

    @app.task
    def thread_id() -> int:
        return threading.get_ident()

    @app.task
    def fails() -> None:
        raise ValueError("as it should")

    await start_worker()
    p = thread_id.send()
    ran_in = await asyncio.wait_for(p, 5)
    assert ran_in != threading.get_ident()
    assert seen == [("before", ran_in, p.id), ("after", ran_in, p.id)]

    failing = fails.send()
    with pytest.raises(pigeon.TaskError, match="as it should"):
        await asyncio.wait_for(failing, 5)
    assert [(step, id) for step, _, id in seen[2:]] == [
        ("before", failing.id),
        ("after", failing.id),
    ]


async def test_around_async_run_is_awaited_around_each_async_task(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    seen: list[tuple[str, str]] = []

    async def around(call: Callable[[], Awaitable[Any]]) -> Any:
        running = pigeon.current().id
        seen.append(("before", running))
        try:
            return await call()
        finally:
            seen.append(("after", running))

    app.around_async_run = around
    sync_calls: list[str] = []
    app.around_sync_run = lambda call: sync_calls.append("sync") or call()

    @app.task
    async def doubled(n: int) -> int:
        await asyncio.sleep(0)
        return 2 * n

    await start_worker()
    p = doubled.send(21)
    assert await asyncio.wait_for(p, 5) == 42
    assert seen == [("before", p.id), ("after", p.id)]
    assert sync_calls == []  # an async task is not a sync task's run
