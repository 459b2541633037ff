"""procrastinate on PostgreSQL (its psycopg 3 connector), in a database of its own.

Configuration: ``procrastinate --app=peers.procrastinate_adapter.app worker -q bench
-c 100`` for both workloads (asyncio tasks; procrastinate's default concurrency is 1, its docs
say to raise it for I/O-bound work), LISTEN/NOTIFY on (its default), log level WARNING. Jobs
are kept after they finish (its default). Bulk: ``task.batch_defer_async``. procrastinate
keeps no return values, so the round trip defers ``echo`` and waits until
``job_manager.get_job_status_async`` says ``succeeded``, polling every ``POLL_SECONDS``: the
system's own way to learn that a job is done.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from typing import Any

import procrastinate
from procrastinate.jobs import Status
from procrastinate.types import JSONDict

from peers.base import (
    NAP_SECONDS,
    POLL_SECONDS,
    POSTGRES_ENV,
    QUEUE,
    ROUND_TRIP_TIMEOUT,
    Broker,
    Kind,
    Place,
    System,
    WorkerCommand,
)
from peers.counter import mark_done


def make_app(dsn: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop", queue=QUEUE)
    async def noop(i: int) -> None:
        mark_done()

    @app.task(name="nap", queue=QUEUE)
    async def nap(i: int) -> None:
        await asyncio.sleep(NAP_SECONDS)
        mark_done()

    @app.task(name="echo", queue=QUEUE)
    async def echo(i: int) -> int:
        return i

    return app


@functools.cache
def _worker_app() -> procrastinate.App:
    return make_app(os.environ[POSTGRES_ENV])


def __getattr__(name: str) -> Any:
    # `procrastinate --app=peers.procrastinate_adapter.app worker` in the worker process.
    if name == "app":
        return _worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ProcrastinateSystem(System):
    name = "procrastinate"
    broker = Broker.POSTGRES
    has_bulk = True

    def __init__(self) -> None:
        self.dsn = ""
        self._app: procrastinate.App | None = None

    @property
    def app(self) -> procrastinate.App:
        assert self._app is not None, "open() first"
        return self._app

    async def open(self, place: Place) -> None:
        assert place.postgres_dsn is not None
        self.dsn = place.postgres_dsn
        self._app = make_app(self.dsn)
        await self._app.open_async()
        await self._app.schema_manager.apply_schema_async()

    async def close(self) -> None:
        if self._app is not None:
            await self._app.close_async()

    async def enqueue_one(self, kind: Kind, i: int) -> None:
        await self.app.tasks[kind.value].defer_async(i=i)

    async def enqueue_bulk(self, kind: Kind, ids: range) -> None:
        jobs: list[JSONDict] = [{"i": i} for i in ids]
        await self.app.tasks[kind.value].batch_defer_async(*jobs)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [sys.executable, "-m", "procrastinate", "--app=peers.procrastinate_adapter.app"]
        argv += ["--log-level", "warning", "worker", "-q", QUEUE, "-c", str(concurrency)]
        return WorkerCommand(argv, {POSTGRES_ENV: self.dsn})

    async def round_trip(self, i: int) -> None:
        job_id = await self.app.tasks["echo"].defer_async(i=i)
        async with asyncio.timeout(ROUND_TRIP_TIMEOUT):
            while True:
                status = await self.app.job_manager.get_job_status_async(job_id)
                if status is Status.SUCCEEDED:
                    return
                assert status in (Status.TODO, Status.DOING), f"echo({i}) ended {status.value}"
                await asyncio.sleep(POLL_SECONDS)
