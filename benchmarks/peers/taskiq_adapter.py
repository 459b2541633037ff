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

import functools
import os
from typing import Any

from taskiq import AsyncBroker
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from peers.base import QUEUE, REDIS_ENV, Broker, Place
from peers.taskiq_common import TaskiqClient, Tasks, register


def make_broker(redis_url: str) -> tuple[AsyncBroker, Tasks]:
    backend: RedisAsyncResultBackend[Any] = RedisAsyncResultBackend(redis_url, result_ex_time=3600)
    broker = RedisStreamBroker(redis_url, queue_name=QUEUE).with_result_backend(backend)
    return broker, register(broker)


@functools.cache
def _worker_broker() -> AsyncBroker:
    return make_broker(os.environ[REDIS_ENV])[0]


def __getattr__(name: str) -> Any:
    # `taskiq worker peers.taskiq_adapter:broker` in the worker process.
    if name == "broker":
        return _worker_broker()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TaskiqSystem(TaskiqClient):
    name = "taskiq"
    broker = Broker.REDIS
    module = "peers.taskiq_adapter"
    env = REDIS_ENV
    make = staticmethod(make_broker)

    async def open(self, place: Place) -> None:
        assert place.redis_url is not None
        await self.start(place.redis_url)
