"""pigeon, on whatever backend a URL names.

One adapter serves the five pigeon rows: ``memory://`` (worker in the harness process: that
store is one process's memory), ``sqlite:///<workdir>/pigeon.db``, ``redis://.../<db>?prefix=``,
``postgresql://.../<own database>`` and ``nats://<own server>?stream=bench``. A backend whose
module does not import yet (NATS, while it is being written) is skipped by the harness with a
one-line note.

Configuration: ``pigeon worker APP -c 100`` for both workloads (asyncio, pigeon's default);
``fire`` for the no-op and nap tasks (pigeon's documented fire-and-forget: no outcome kept),
``send`` + ``await`` for the round trip (pushed notifications where the backend has them).
Enqueue one by one is ``fire`` + ``await app.flush()`` (stored when it returns); bulk is
pigeon's bulk API, ``fire_many`` of the N calls + one ``flush`` (stored when it returns).

With ``$PIGEON_BENCH_METRICS`` set (``run.py --metrics``) the workers run with Prometheus
metrics on (``--metrics-port`` on a free port; in process, a ``WorkerMetrics`` observer),
to measure what they cost against a run without.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar

import pigeon
from peers.base import (
    NAP_SECONDS,
    ROUND_TRIP_TIMEOUT,
    Broker,
    Kind,
    Place,
    System,
    WorkerCommand,
)
from peers.counter import mark_done
from pigeon.worker import Worker

URL_ENV = "PIGEON_URL"
METRICS_ENV = "PIGEON_BENCH_METRICS"


def _metrics_on() -> bool:
    return bool(os.environ.get(METRICS_ENV))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_app(url: str) -> pigeon.App:
    """The benchmark's App: the same three tasks as every other system."""
    app = pigeon.App(url)

    @app.task(name="noop")
    async def noop(i: int) -> None:
        mark_done()

    @app.task(name="nap")
    async def nap(i: int) -> None:
        await asyncio.sleep(NAP_SECONDS)
        mark_done()

    @app.task(name="echo")
    async def echo(i: int) -> int:
        return i

    return app


@functools.cache
def _worker_app() -> pigeon.App:
    return make_app(os.environ[URL_ENV])


def __getattr__(name: str) -> Any:
    # `pigeon worker peers.pigeon_adapter:app` in the worker process: the App of $PIGEON_URL,
    # built on first use (so that importing this module connects to nothing).
    if name == "app":
        return _worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class PigeonSystem(System):
    """pigeon on one backend; subclasses say which, by the URL they build."""

    has_bulk = True

    def __init__(self) -> None:
        self.url = ""
        self._app: pigeon.App | None = None

    def make_url(self, place: Place) -> str:
        raise NotImplementedError

    @property
    def app(self) -> pigeon.App:
        assert self._app is not None, "open() first"
        return self._app

    async def open(self, place: Place) -> None:
        self.url = self.make_url(place)
        self._app = make_app(self.url)
        await self.app.open()

    async def close(self) -> None:
        if self._app is not None:
            await self._app.close()

    async def enqueue_one(self, kind: Kind, i: int) -> None:
        self.app.tasks[kind.value].fire(i)
        await self.app.flush()

    async def enqueue_bulk(self, kind: Kind, ids: range) -> None:
        self.app.tasks[kind.value].fire_many((i,) for i in ids)
        await self.app.flush()

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [sys.executable, "-m", "pigeon", "worker", "peers.pigeon_adapter:app"]
        argv += ["-c", str(concurrency), "--log-level", "warning"]
        if _metrics_on():
            argv += ["--metrics-port", str(_free_port())]
        return WorkerCommand(argv, {URL_ENV: self.url})

    async def round_trip(self, i: int) -> None:
        async with asyncio.timeout(ROUND_TRIP_TIMEOUT):
            result = await self.app.tasks["echo"].send(i)
        assert result == i, f"echo({i}) returned {result!r}"


class PigeonMemory(PigeonSystem):
    name = "pigeon-memory"
    broker = Broker.MEMORY
    in_process = True

    def make_url(self, place: Place) -> str:
        return "memory://"

    def serve(self, kind: Kind, concurrency: int) -> AbstractAsyncContextManager[None]:
        return self._serve(concurrency)

    @asynccontextmanager
    async def _serve(self, concurrency: int) -> AsyncIterator[None]:
        observer = None
        if _metrics_on():
            from prometheus_client import CollectorRegistry

            from pigeon.metrics import WorkerMetrics

            observer = WorkerMetrics(CollectorRegistry())
        worker = Worker(self.app, concurrency=concurrency, observer=observer)
        runner = asyncio.create_task(worker.run())
        try:
            yield
        finally:
            worker.stop()
            await runner


class PigeonSQLite(PigeonSystem):
    name = "pigeon-sqlite"
    broker = Broker.SQLITE

    def make_url(self, place: Place) -> str:
        return f"sqlite:///{place.workdir / 'pigeon.db'}"


class PigeonRedis(PigeonSystem):
    name = "pigeon-redis"
    broker = Broker.REDIS
    requires: ClassVar[tuple[str, ...]] = ("pigeon.backends.redis",)

    def make_url(self, place: Place) -> str:
        assert place.redis_url is not None
        return f"{place.redis_url}?prefix=bench-{place.run_id}"


class PigeonPostgres(PigeonSystem):
    name = "pigeon-postgres"
    broker = Broker.POSTGRES
    requires: ClassVar[tuple[str, ...]] = ("pigeon.backends.postgres",)

    def make_url(self, place: Place) -> str:
        assert place.postgres_dsn is not None
        return place.postgres_dsn


class PigeonNats(PigeonSystem):
    name = "pigeon-nats"
    broker = Broker.NATS
    # Skipped with a one-line note until the NATS backend (issue 18) imports.
    requires: ClassVar[tuple[str, ...]] = ("pigeon.backends.nats.backend",)

    def make_url(self, place: Place) -> str:
        assert place.nats_url is not None
        return f"{place.nats_url}?stream=bench"
