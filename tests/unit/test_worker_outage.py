"""A worker whose broker stops answering: unprobed, it gives up after ``unhealthy_after``
seconds of failing fetches (exit 3, so that a supervisor restarts it); probed (health port or
file), it keeps retrying and works again by itself once the broker answers."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

import pigeon
from pigeon.errors import BackendError
from pigeon.worker import Worker
from pigeon.worker.loop import EXIT_UNHEALTHY

from .support import eventually


class Outage:
    """Makes ``backend.fetch`` fail while ``down`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, backend: Any) -> None:
        self.down = True
        self.failed = 0
        fetch = backend.fetch

        async def failing(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.failed += 1
                raise BackendError("the broker is gone (a test outage)")
            return await fetch(*args, **kwargs)

        monkeypatch.setattr(backend, "fetch", failing)


async def test_an_unprobed_worker_gives_up_with_exit_3(
    app: pigeon.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    await app.open()
    outage = Outage(monkeypatch, app.backend)
    worker = Worker(app, concurrency=2, unhealthy_after=0.3)
    code = await asyncio.wait_for(worker.run(), 10)
    assert code == EXIT_UNHEALTHY
    assert outage.failed >= 2


async def test_a_worker_that_never_gives_up_works_again_when_the_broker_answers(
    app: pigeon.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task
    async def double(x: int) -> int:
        return 2 * x

    promise = double.send(21)
    await app.open()
    outage = Outage(monkeypatch, app.backend)
    worker = Worker(app, concurrency=2, unhealthy_after=math.inf)
    running = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: outage.failed >= 4, timeout=10)
        assert not running.done()
        outage.down = False
        assert await asyncio.wait_for(promise, 10) == 42
    finally:
        worker.stop()
        assert await asyncio.wait_for(running, 10) == 0
