"""SAQ on Redis.

Configuration: ``saq peers.saq_adapter.settings --workers 1`` with ``concurrency`` = 100 for
both workloads (asyncio; SAQ's default is 10), log level WARNING (SAQ's CLI default). ``noop``
and ``nap`` are enqueued with ``ttl=-1`` (SAQ's "disabled": the job record is deleted when it
finishes, nothing kept); ``echo`` keeps the default ttl and the round trip is
``queue.apply("echo", ...)``, SAQ's enqueue-and-wait, whose status poll is lowered from 0.5 s
to ``POLL_SECONDS``. SAQ has no bulk enqueue API.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from saq import Queue

from peers.base import (
    CONCURRENCY_ENV,
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


async def noop(ctx: dict[str, Any], *, i: int) -> None:
    mark_done()


async def nap(ctx: dict[str, Any], *, i: int) -> None:
    await asyncio.sleep(NAP_SECONDS)
    mark_done()


async def echo(ctx: dict[str, Any], *, i: int) -> int:
    return i


def make_queue(redis_url: str) -> Queue:
    return Queue.from_url(redis_url, name=QUEUE)


def __getattr__(name: str) -> Any:
    # `saq peers.saq_adapter.settings` in the worker process.
    if name == "settings":
        return {
            "queue": make_queue(os.environ[REDIS_ENV]),
            "functions": [noop, nap, echo],
            "concurrency": int(os.environ[CONCURRENCY_ENV]),
        }
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SaqSystem(System):
    name = "saq"
    broker = Broker.REDIS

    def __init__(self) -> None:
        self.redis_url = ""
        self._queue: Queue | None = None

    @property
    def queue(self) -> Queue:
        assert self._queue is not None, "open() first"
        return self._queue

    async def open(self, place: Place) -> None:
        assert place.redis_url is not None
        self.redis_url = place.redis_url
        self._queue = make_queue(place.redis_url)
        await self._queue.connect()

    async def close(self) -> None:
        if self._queue is not None:
            await self._queue.disconnect()

    async def enqueue_one(self, kind: Kind, i: int) -> None:
        await self.queue.enqueue(kind.value, i=i, ttl=-1)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [sys.executable, "-m", "saq", "peers.saq_adapter.settings", "--workers", "1"]
        env = {REDIS_ENV: self.redis_url, CONCURRENCY_ENV: str(concurrency)}
        return WorkerCommand(argv, env)

    async def round_trip(self, i: int) -> None:
        result = await self.queue.apply(
            "echo", timeout=ROUND_TRIP_TIMEOUT, poll_interval=POLL_SECONDS, i=i
        )
        assert result == i, f"echo({i}) returned {result!r}"
