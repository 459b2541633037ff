"""PgQueuer on PostgreSQL (its asyncpg driver), in a database of its own.

Configuration: the worker is ``pgqueuer.run(create_pgqueuer, max_concurrent_tasks=100)`` on
uvloop, which is what ``pgq run peers.pgqueuer_adapter:create_pgqueuer
--max-concurrent-tasks 100`` does (pgqueuer 1.6.0's ``pgq run`` itself fails at start-up: its
``--log-level`` handling raises ``AttributeError: 'str' object has no attribute 'name'``), for
both workloads (asyncio; the default batch size of 10), log level WARNING; the schema is
installed with ``Queries.install()`` (durable tables, the default). Bulk: ``Queries.enqueue``
with lists. PgQueuer keeps no return values: the round trip waits for the job's terminal
status with its ``CompletionWatcher`` (LISTEN/NOTIFY), whose debounce is lowered from 50 ms to
``POLL_SECONDS``. The worker records statuses through a buffer flushed every 0.1 s (not
configurable), which bounds how soon a completion can be seen.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
import pgqueuer
import uvloop
from pgqueuer import AsyncpgDriver, Job, PgQueuer, Queries
from pgqueuer.core.completion import CompletionWatcher

from peers.base import (
    NAP_SECONDS,
    POLL_SECONDS,
    POSTGRES_ENV,
    ROUND_TRIP_TIMEOUT,
    Broker,
    Kind,
    Place,
    System,
    WorkerCommand,
)
from peers.counter import mark_done


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    """`pgq run peers.pgqueuer_adapter:create_pgqueuer`: the worker process's PgQueuer."""
    connection = await asyncpg.connect(os.environ[POSTGRES_ENV])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        mark_done()

    @pgq.entrypoint("nap")
    async def nap(job: Job) -> None:
        await asyncio.sleep(NAP_SECONDS)
        mark_done()

    @pgq.entrypoint("echo")
    async def echo(job: Job) -> None:
        pass  # PgQueuer keeps no return value: completing is the answer

    try:
        yield pgq
    finally:
        await connection.close()


class PgQueuerSystem(System):
    name = "pgqueuer"
    broker = Broker.POSTGRES
    has_bulk = True

    def __init__(self) -> None:
        self.dsn = ""
        self._connections: list[asyncpg.Connection] = []
        self._queries: Queries | None = None
        self._watcher: CompletionWatcher | None = None

    @property
    def queries(self) -> Queries:
        assert self._queries is not None, "open() first"
        return self._queries

    async def open(self, place: Place) -> None:
        assert place.postgres_dsn is not None
        self.dsn = place.postgres_dsn
        sending = await asyncpg.connect(self.dsn)
        listening = await asyncpg.connect(self.dsn)
        self._connections = [sending, listening]
        self._queries = Queries(AsyncpgDriver(sending))
        await self._queries.install()
        # The watcher LISTENs on a connection of its own, so that its queries never wait
        # behind ours.
        watch_driver = AsyncpgDriver(listening)
        self._watcher = CompletionWatcher(
            watch_driver,
            queries=Queries(watch_driver),
            debounce=timedelta(seconds=POLL_SECONDS),
        )
        await self._watcher.__aenter__()

    async def close(self) -> None:
        if self._watcher is not None:
            await self._watcher.__aexit__(None, None, None)
        for connection in self._connections:
            await connection.close()

    async def enqueue_one(self, kind: Kind, i: int) -> None:
        await self.queries.enqueue(kind.value, str(i).encode())

    async def enqueue_bulk(self, kind: Kind, ids: range) -> None:
        n = len(ids)
        await self.queries.enqueue([kind.value] * n, [str(i).encode() for i in ids], [0] * n)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [sys.executable, "-m", "peers.pgqueuer_adapter"]
        argv += ["--max-concurrent-tasks", str(concurrency)]
        return WorkerCommand(argv, {POSTGRES_ENV: self.dsn})

    async def round_trip(self, i: int) -> None:
        assert self._watcher is not None
        [job_id] = await self.queries.enqueue("echo", str(i).encode())
        status = await asyncio.wait_for(self._watcher.wait_for(job_id), ROUND_TRIP_TIMEOUT)
        assert status == "successful", f"echo({i}) ended {status}"


def main() -> None:
    """The worker process: what ``pgq run`` does, minus its broken logging set-up."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--max-concurrent-tasks", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    uvloop.run(pgqueuer.run(create_pgqueuer, max_concurrent_tasks=args.max_concurrent_tasks))


if __name__ == "__main__":
    main()
