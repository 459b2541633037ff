"""huey on Redis (``RedisHuey``, results in Redis with ``notify_result=True``).

Configuration: ``huey_consumer peers.huey_adapter.huey -k thread`` with 8 threads for the
no-op workload (huey's default is 1 thread; 8 matches Dramatiq's default and lets the threads
overlap their Redis round trips) and ``-w 100`` for the nap workload (``thread`` is the worker
type huey's help calls "the safest choice"; greenlets would need gevent), periodic tasks off
(``-n``), log level WARNING (``-q``). huey stores a task's result only when it returns a value:
``noop`` and ``nap`` return None, so nothing is kept; ``echo``'s result is read with
``result.get(blocking=True)``, which ``notify_result=True`` turns into a BLPOP (pushed)
instead of polling with backoff. huey has no bulk enqueue API.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any

from huey import RedisHuey

from peers.base import (
    NAP_SECONDS,
    REDIS_ENV,
    ROUND_TRIP_TIMEOUT,
    Broker,
    Kind,
    Place,
    System,
    WorkerCommand,
)
from peers.counter import mark_done

NOOP_THREADS = 8


def make_huey(redis_url: str) -> tuple[RedisHuey, dict[str, Any]]:
    huey = RedisHuey("bench", url=redis_url, notify_result=True)

    @huey.task(name="noop")
    def noop(i: int) -> None:
        mark_done()

    @huey.task(name="nap")
    def nap(i: int) -> None:
        time.sleep(NAP_SECONDS)
        mark_done()

    @huey.task(name="echo")
    def echo(i: int) -> int:
        return i

    return huey, {"noop": noop, "nap": nap, "echo": echo}


@functools.cache
def _worker_huey() -> RedisHuey:
    return make_huey(os.environ[REDIS_ENV])[0]


def __getattr__(name: str) -> Any:
    # `huey_consumer peers.huey_adapter.huey` in the worker process.
    if name == "huey":
        return _worker_huey()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class HueySystem(System):
    name = "huey"
    broker = Broker.REDIS

    def __init__(self) -> None:
        self.redis_url = ""
        self._huey: RedisHuey | None = None
        self.tasks: dict[str, Any] = {}

    async def open(self, place: Place) -> None:
        assert place.redis_url is not None
        self.redis_url = place.redis_url
        self._huey, self.tasks = make_huey(place.redis_url)

    async def close(self) -> None:
        if self._huey is not None:
            self._huey.storage.pool.disconnect()

    async def enqueue_one(self, kind: Kind, i: int) -> None:
        self.tasks[kind.value](i)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        threads = NOOP_THREADS if kind is Kind.NOOP else concurrency
        argv = [sys.executable, "-m", "huey.bin.huey_consumer", "peers.huey_adapter.huey"]
        argv += ["-k", "thread", "-w", str(threads), "-n", "-q"]
        return WorkerCommand(argv, {REDIS_ENV: self.redis_url})

    async def round_trip(self, i: int) -> None:
        result = self.tasks["echo"](i).get(blocking=True, timeout=ROUND_TRIP_TIMEOUT)
        assert result == i, f"echo({i}) returned {result!r}"
