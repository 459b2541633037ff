"""A worker's heartbeat says how long ago a fetch last answered and last brought work.

The dashboard's stalled flag (a fresh heartbeat, due work, and no work fetched for a
minute) reads these ages; they are ages, not times, so that the worker's clock never meets
the backend's.
"""

from __future__ import annotations

import asyncio

import pigeon
from pigeon.message import WorkerInfo
from pigeon.worker import Worker

from .support import eventually


async def beat(app: pigeon.App) -> WorkerInfo | None:
    workers = (await app.backend.stats()).workers
    return workers[0] if workers else None


async def test_the_heartbeat_carries_the_age_of_the_last_fetch_and_of_the_last_work(
    app: pigeon.App,
) -> None:
    @app.task
    async def double(x: int) -> int:
        return 2 * x

    await app.open()
    worker = Worker(app, concurrency=2, heartbeat=0.05)
    running = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: worker.fetches >= 2, timeout=10)
        await asyncio.sleep(0.2)  # a heartbeat or more after a fetch answered
        idle = await beat(app)
        assert idle is not None
        assert idle.fetch_age is not None
        assert 0 <= idle.fetch_age < 5
        assert idle.work_age is None  # nothing fetched yet

        assert await asyncio.wait_for(double.send(21), 10) == 42
        await asyncio.sleep(0.2)  # a heartbeat or more since
        worked = await beat(app)
        assert worked is not None
        assert worked.work_age is not None
        assert 0 <= worked.work_age < 5
    finally:
        worker.stop()
        assert await asyncio.wait_for(running, 10) == 0
