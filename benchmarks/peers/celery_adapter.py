"""Celery on Redis (broker and result backend in the same Redis database).

Configuration (Celery's "Optimizing" guide): the no-op worker is the default prefork pool
with one child per core (``-c`` = CPU count) and ``--prefetch-multiplier 64`` ("if you have
lots of short tasks ... you want this number to be large. Say 64, or 128"); gossip, mingle
and heartbeat are off (one worker, nothing to talk to). The nap worker is the thread pool with
``-c 100`` (an I/O-bound task; threads need no monkey-patching, unlike gevent/eventlet) and the
default prefetch. ``noop`` and ``nap`` are ``ignore_result=True`` (no result is needed: the
recommended setting); ``echo`` stores its result and ``AsyncResult.get`` waits for it (the
Redis result backend is notified through pub/sub). Celery has no bulk enqueue API (``group``
publishes one message per task), so that column is empty.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any

from celery import Celery

from peers.base import (
    NAP_SECONDS,
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

NOOP_PREFETCH_MULTIPLIER = 64


def make_app(redis_url: str) -> Celery:
    app = Celery("bench", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        result_expires=3600,
    )

    @app.task(name="noop", ignore_result=True)
    def noop(i: int) -> None:
        mark_done()

    @app.task(name="nap", ignore_result=True)
    def nap(i: int) -> None:
        time.sleep(NAP_SECONDS)
        mark_done()

    @app.task(name="echo")
    def echo(i: int) -> int:
        return i

    return app


@functools.cache
def _worker_app() -> Celery:
    return make_app(os.environ[REDIS_ENV])


def __getattr__(name: str) -> Any:
    # `celery -A peers.celery_adapter:app worker` in the worker process.
    if name == "app":
        return _worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CelerySystem(System):
    name = "celery"
    broker = Broker.REDIS

    def __init__(self) -> None:
        self.redis_url = ""
        self._app: Celery | None = None

    @property
    def app(self) -> Celery:
        assert self._app is not None, "open() first"
        return self._app

    async def open(self, place: Place) -> None:
        assert place.redis_url is not None
        self.redis_url = place.redis_url
        self._app = make_app(place.redis_url)

    async def close(self) -> None:
        if self._app is not None:
            self._app.close()

    async def enqueue_one(self, kind: Kind, i: int) -> None:
        self.app.tasks[kind.value].apply_async((i,))

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [sys.executable, "-m", "celery", "-A", "peers.celery_adapter:app", "worker"]
        argv += ["-Q", QUEUE, "-l", "WARNING", "--without-gossip", "--without-mingle"]
        argv += ["--without-heartbeat"]
        if kind is Kind.NOOP:
            cores = os.cpu_count() or 1
            argv += ["-P", "prefork", "-c", str(cores)]
            argv += ["--prefetch-multiplier", str(NOOP_PREFETCH_MULTIPLIER)]
        else:
            argv += ["-P", "threads", "-c", str(concurrency)]
        return WorkerCommand(argv, {REDIS_ENV: self.redis_url})

    async def round_trip(self, i: int) -> None:
        result = self.app.tasks["echo"].apply_async((i,)).get(timeout=ROUND_TRIP_TIMEOUT)
        assert result == i, f"echo({i}) returned {result!r}"
