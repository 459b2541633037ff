"""RQ on Redis.

Configuration: RQ runs one job at a time per worker process, in a work horse forked for each
job (its default ``Worker``). The no-op workload runs one such worker, started by
``python -m peers.rq_adapter`` rather than ``rq worker`` so that the task module is imported
before the fork (RQ's performance notes: "preload" the modules jobs need); the nap workload
runs ``WorkerPool`` with 100 worker processes (RQ's way to run jobs concurrently). ``noop`` and
``nap`` are enqueued with ``result_ttl=0`` (no result kept, the job is deleted on success);
``echo``'s result is read with ``job.latest_result(timeout=...)``, a blocking XREAD on the
job's result stream (pushed). Bulk: ``Queue.enqueue_many`` (one Redis pipeline).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Any

from redis import Redis
from rq import Queue, Worker
from rq.worker_pool import WorkerPool

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


def noop(i: int) -> None:
    mark_done()


def nap(i: int) -> None:
    time.sleep(NAP_SECONDS)
    mark_done()


def echo(i: int) -> int:
    return i


class RqSystem(System):
    name = "rq"
    broker = Broker.REDIS
    has_bulk = True

    def __init__(self) -> None:
        self.redis_url = ""
        self._redis: Redis | None = None
        self._queue: Queue | None = None
        # Imported by name so that the jobs refer to `peers.rq_adapter.noop`, the module the
        # worker imports, even when this file runs as __main__.
        tasks = importlib.import_module("peers.rq_adapter")
        self.functions: dict[str, Any] = {"noop": tasks.noop, "nap": tasks.nap, "echo": tasks.echo}

    @property
    def queue(self) -> Queue:
        assert self._queue is not None, "open() first"
        return self._queue

    async def open(self, place: Place) -> None:
        assert place.redis_url is not None
        self.redis_url = place.redis_url
        self._redis = Redis.from_url(place.redis_url)
        self._queue = Queue(QUEUE, connection=self._redis)

    async def close(self) -> None:
        if self._redis is not None:
            self._redis.close()

    async def enqueue_one(self, kind: Kind, i: int) -> None:
        self.queue.enqueue(self.functions[kind.value], i, result_ttl=0)

    async def enqueue_bulk(self, kind: Kind, ids: range) -> None:
        f = self.functions[kind.value]
        self.queue.enqueue_many([Queue.prepare_data(f, (i,), result_ttl=0) for i in ids])

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        processes = 1 if kind is Kind.NOOP else concurrency
        argv = [sys.executable, "-m", "peers.rq_adapter", "--processes", str(processes)]
        return WorkerCommand(argv, {REDIS_ENV: self.redis_url})

    async def round_trip(self, i: int) -> None:
        job = self.queue.enqueue(self.functions["echo"], i)
        result = job.latest_result(timeout=int(ROUND_TRIP_TIMEOUT))
        assert result is not None, f"echo({i}): no result within {ROUND_TRIP_TIMEOUT} s"
        assert result.return_value == i, f"echo({i}) returned {result.return_value!r}"


def main() -> None:
    """The worker process: one RQ ``Worker``, or a ``WorkerPool`` of ``--processes``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    importlib.import_module("peers.rq_adapter")  # preload the jobs' module before forking
    connection = Redis.from_url(os.environ[REDIS_ENV])
    if args.processes == 1:
        Worker([QUEUE], connection=connection).work(logging_level="WARNING")
    else:
        pool = WorkerPool([QUEUE], connection=connection, num_workers=args.processes)
        pool.start(logging_level="WARNING")


if __name__ == "__main__":
    main()
