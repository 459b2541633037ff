"""arq on Redis.

Configuration: ``arq peers.arq_adapter.WorkerSettings`` with ``max_jobs`` = 100 for both
workloads (asyncio), the worker's queue poll and the result poll lowered from 0.5 s to
``POLL_SECONDS`` (arq polls Redis for new jobs and for results; at 0.5 s the round trip would
measure the interval), per-job result logging off and the log level at WARNING. ``noop`` and
``nap`` are registered with ``keep_result=0`` (no result kept); ``echo`` keeps its result and
the round trip reads it with ``job.result()``. arq has no bulk enqueue API.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.worker import func

from peers.base import (
    CONCURRENCY_ENV,
    NAP_SECONDS,
    POLL_SECONDS,
    REDIS_ENV,
    ROUND_TRIP_TIMEOUT,
    Broker,
    Kind,
    Place,
    System,
    WorkerCommand,
)
from peers.counter import mark_done

#: `--custom-log-dict`: arq's default config logs every job at INFO.
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["stderr"], "level": "WARNING"}},
}


async def noop(ctx: dict[str, Any], i: int) -> None:
    mark_done()


async def nap(ctx: dict[str, Any], i: int) -> None:
    await asyncio.sleep(NAP_SECONDS)
    mark_done()


async def echo(ctx: dict[str, Any], i: int) -> int:
    return i


def worker_settings(redis_url: str, concurrency: int) -> type:
    class WorkerSettings:
        functions = [
            func(noop, name="noop", keep_result=0),
            func(nap, name="nap", keep_result=0),
            func(echo, name="echo"),
        ]
        redis_settings = RedisSettings.from_dsn(redis_url)
        max_jobs = concurrency
        poll_delay = POLL_SECONDS
        log_results = False

    return WorkerSettings


def __getattr__(name: str) -> Any:
    # `arq peers.arq_adapter.WorkerSettings` in the worker process.
    if name == "WorkerSettings":
        return worker_settings(os.environ[REDIS_ENV], int(os.environ[CONCURRENCY_ENV]))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ArqSystem(System):
    name = "arq"
    broker = Broker.REDIS

    def __init__(self) -> None:
        self.redis_url = ""
        self._redis: ArqRedis | None = None

    @property
    def redis(self) -> ArqRedis:
        assert self._redis is not None, "open() first"
        return self._redis

    async def open(self, place: Place) -> None:
        assert place.redis_url is not None
        self.redis_url = place.redis_url
        self._redis = await create_pool(RedisSettings.from_dsn(place.redis_url))

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def enqueue_one(self, kind: Kind, i: int) -> None:
        await self.redis.enqueue_job(kind.value, i)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [sys.executable, "-m", "arq", "peers.arq_adapter.WorkerSettings"]
        argv += ["--custom-log-dict", "peers.arq_adapter.LOG_CONFIG"]
        env = {REDIS_ENV: self.redis_url, CONCURRENCY_ENV: str(concurrency)}
        return WorkerCommand(argv, env)

    async def round_trip(self, i: int) -> None:
        job = await self.redis.enqueue_job("echo", i)
        assert job is not None
        result = await job.result(timeout=ROUND_TRIP_TIMEOUT, poll_delay=POLL_SECONDS)
        assert result == i, f"echo({i}) returned {result!r}"
