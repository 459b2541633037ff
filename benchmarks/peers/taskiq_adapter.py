"""taskiq on Redis: ``RedisStreamBroker`` (Redis streams with acknowledgements, the
taskiq-redis broker that does not lose a task when a worker dies) and
``RedisAsyncResultBackend``.

Configuration: ``taskiq worker peers.taskiq_adapter:broker --workers 1`` (one process; the
default is 2) with ``--max-async-tasks 100`` (taskiq's default) for both workloads, log level
WARNING. taskiq stores the result of every task once a result backend is set (there is no
per-task opt-out), so ``noop`` and ``nap`` results are written too. The round trip is
``await (await echo.kiq(i)).wait_result(check_interval=POLL_SECONDS)`` (taskiq polls the
result backend; its default interval is 0.2 s). taskiq has no bulk enqueue API.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from typing import Any

from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from peers.base import (
    NAP_SECONDS,
    POLL_SECONDS,
    QUEUE,
    REDIS_ENV,
    ROUND_TRIP_TIMEOUT,
    Broker,
    Kind,
    Place,
    System,
    WorkerCommand,
)
from peers.counter import mark_done

Tasks = dict[str, AsyncTaskiqDecoratedTask[Any, Any]]


def make_broker(redis_url: str) -> tuple[AsyncBroker, Tasks]:
    backend: RedisAsyncResultBackend[Any] = RedisAsyncResultBackend(redis_url, result_ex_time=3600)
    broker = RedisStreamBroker(redis_url, queue_name=QUEUE).with_result_backend(backend)

    @broker.task(task_name="noop")
    async def noop(i: int) -> None:
        mark_done()

    @broker.task(task_name="nap")
    async def nap(i: int) -> None:
        await asyncio.sleep(NAP_SECONDS)
        mark_done()

    @broker.task(task_name="echo")
    async def echo(i: int) -> int:
        return i

    return broker, {"noop": noop, "nap": nap, "echo": echo}


@functools.cache
def _worker_broker() -> AsyncBroker:
    return make_broker(os.environ[REDIS_ENV])[0]


def __getattr__(name: str) -> Any:
    # `taskiq worker peers.taskiq_adapter:broker` in the worker process.
    if name == "broker":
        return _worker_broker()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TaskiqSystem(System):
    name = "taskiq"
    broker = Broker.REDIS

    def __init__(self) -> None:
        self.redis_url = ""
        self._broker: AsyncBroker | None = None
        self.tasks: Tasks = {}

    async def open(self, place: Place) -> None:
        assert place.redis_url is not None
        self.redis_url = place.redis_url
        self._broker, self.tasks = make_broker(place.redis_url)
        # Declares the stream's consumer group now, before the first task is sent: the group
        # starts at "$", so a group made later by the worker would skip what is queued.
        await self._broker.startup()

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()

    async def enqueue_one(self, kind: Kind, i: int) -> None:
        await self.tasks[kind.value].kiq(i)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [sys.executable, "-m", "taskiq", "worker", "peers.taskiq_adapter:broker"]
        argv += ["--workers", "1", "--max-async-tasks", str(concurrency)]
        argv += ["--log-level", "WARNING"]
        return WorkerCommand(argv, {REDIS_ENV: self.redis_url})

    async def round_trip(self, i: int) -> None:
        handle = await self.tasks["echo"].kiq(i)
        result = await handle.wait_result(check_interval=POLL_SECONDS, timeout=ROUND_TRIP_TIMEOUT)
        assert not result.is_err, f"echo({i}) failed: {result.error!r}"
        assert result.return_value == i, f"echo({i}) returned {result.return_value!r}"
