"""Fixtures for the unit tests: an App on ``memory://`` and in-process workers for it.

A worker runs as an asyncio task on the test's own event loop (which is also the App's home
loop), so a test can send, wait and stop it without threads or processes.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import pigeon
from pigeon.worker import Worker

StartWorker = Callable[..., Awaitable[Worker]]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    # CPython 3.11's ast module is not re-entrant: a garbage collection in the middle of
    # pytest's ast.parse (formatting a failure) can finalize an asyncio task whose exception
    # was never retrieved, whose log formats a traceback, which parses too, and pytest dies
    # with "SystemError: AST constructor recursion depth mismatch". Collect first.
    if call.excinfo is not None:
        gc.collect()


def pytest_sessionfinish(session: pytest.Session) -> None:
    gc.collect()  # the same, before the terminal summary (which may import and parse)


@pytest.fixture
async def app() -> AsyncIterator[pigeon.App]:
    app = pigeon.App("memory://")
    yield app
    await app.close()


@pytest.fixture
async def gate() -> asyncio.Event:
    """An event that tasks can wait on to stay running until the test opens it.

    It is opened at teardown before the workers stop, so no task outlives its test.
    """
    return asyncio.Event()


@pytest.fixture
async def start_worker(app: pigeon.App, gate: asyncio.Event) -> AsyncIterator[StartWorker]:
    """Start workers on ``app`` (``await start_worker(concurrency=..., ...)``).

    Every worker started is stopped at teardown, and must exit with code 0.
    """
    started: list[tuple[Worker, asyncio.Task[int]]] = []

    async def start(concurrency: int = 8, **options: Any) -> Worker:
        options.setdefault("grace", 2.0)
        worker = Worker(app, concurrency=concurrency, **options)
        started.append((worker, asyncio.create_task(worker.run())))
        await asyncio.sleep(0)  # let it open the backend and begin fetching
        return worker

    yield start
    gate.set()
    for worker, _ in started:
        worker.stop()
    for _, task in started:
        async with asyncio.timeout(10):
            assert await task == 0


@pytest.fixture
async def worker(start_worker: StartWorker) -> Worker:
    """One running worker on the default queue with a concurrency of 8."""
    return await start_worker()
