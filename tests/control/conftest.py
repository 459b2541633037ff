"""Fixtures for the control-of-work tests: an App on every backend (its own store each test)
and in-process workers for it, on the test's own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import pigeon
from pigeon.worker import Worker
from tests.servers import BACKEND_URLS, cleanup, make_url, require_server, scheme_of

StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture(params=BACKEND_URLS, ids=scheme_of)
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[pigeon.App]:
    url = make_url(request.param, tmp_path)
    require_server(url)
    app = pigeon.App(url, events=True)
    try:
        yield app
    finally:
        await app.close()
        await cleanup(url)


@pytest.fixture
async def start_worker(app: pigeon.App) -> AsyncIterator[StartWorker]:
    """Start workers on ``app``; each is stopped at teardown and must exit with code 0."""
    started: list[tuple[Worker, asyncio.Task[int]]] = []

    async def start(concurrency: int = 8, **options: Any) -> Worker:
        options.setdefault("grace", 2.0)
        worker = Worker(app, concurrency=concurrency, **options)
        started.append((worker, asyncio.create_task(worker.run())))
        await asyncio.sleep(0)
        return worker

    yield start
    for worker, _ in started:
        worker.stop()
    for _, task in started:
        async with asyncio.timeout(15):
            assert await task == 0
