"""Dramatiq on Redis, with its Results middleware (Redis result backend) for round trips.

Configuration: one worker process (``-p 1``) with Dramatiq's default 8 threads for the no-op
workload and ``-t 100`` for the nap workload. ``echo`` is declared with
``store_results=True`` and read with ``message.get_result(block=True)`` (the Redis result
backend blocks on the result key: pushed, not polled); ``noop`` and ``nap`` store nothing.
Dramatiq has no bulk enqueue API (``group`` sends one message per task).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

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

NOOP_THREADS = 8  # Dramatiq's default


def noop(i: int) -> None:
    mark_done()


def nap(i: int) -> None:
    time.sleep(NAP_SECONDS)
    mark_done()


def echo(i: int) -> int:
    return i


Actor = dramatiq.Actor[Any, Any]


def make_broker(redis_url: str) -> tuple[RedisBroker, dict[str, Actor]]:
    """The broker with the Results middleware, set as the global broker, and its actors."""
    broker = RedisBroker(url=redis_url)
    broker.add_middleware(Results(backend=RedisBackend(url=redis_url)))
    dramatiq.set_broker(broker)

    def declare(fn: Callable[[int], object], **options: Any) -> Actor:
        decorator = dramatiq.actor(
            actor_name=fn.__name__, queue_name=QUEUE, broker=broker, max_retries=0, **options
        )
        return decorator(fn)

    actors = {"noop": declare(noop), "nap": declare(nap)}
    actors["echo"] = declare(echo, store_results=True)
    return broker, actors


def setup_broker() -> None:
    """`dramatiq peers.dramatiq_adapter:setup_broker`: called in every worker process."""
    make_broker(os.environ[REDIS_ENV])


class DramatiqSystem(System):
    name = "dramatiq"
    broker = Broker.REDIS

    def __init__(self) -> None:
        self.redis_url = ""
        self._broker: RedisBroker | None = None
        self.actors: dict[str, Actor] = {}

    async def open(self, place: Place) -> None:
        assert place.redis_url is not None
        self.redis_url = place.redis_url
        self._broker, self.actors = make_broker(place.redis_url)

    async def close(self) -> None:
        if self._broker is not None:
            self._broker.close()

    async def enqueue_one(self, kind: Kind, i: int) -> None:
        self.actors[kind.value].send(i)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        threads = NOOP_THREADS if kind is Kind.NOOP else concurrency
        argv = [sys.executable, "-m", "dramatiq", "peers.dramatiq_adapter:setup_broker"]
        argv += ["-p", "1", "-t", str(threads), "-Q", QUEUE]
        return WorkerCommand(argv, {REDIS_ENV: self.redis_url})

    async def round_trip(self, i: int) -> None:
        message = self.actors["echo"].send(i)
        result = message.get_result(block=True, timeout=int(ROUND_TRIP_TIMEOUT * 1000))
        assert result == i, f"echo({i}) returned {result!r}"
