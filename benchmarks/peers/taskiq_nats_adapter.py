"""taskiq on NATS JetStream: taskiq-nats's ``PullBasedJetStreamBroker`` (a durable pull
consumer on a stream: a task is acknowledged once it has run, so a worker that dies does not
lose it) and its ``NATSObjectStoreResultBackend`` (results in a JetStream object store).

Configuration: ``taskiq worker peers.taskiq_nats_adapter:broker --workers 1`` (one process;
the default is 2) with ``--max-async-tasks`` 100 (taskiq's default) for both workloads, log
level WARNING; the pull consumer asks for up to ``pull_consume_batch=100`` messages per
request and takes what came after ``pull_consume_timeout=POLL_SECONDS`` (the defaults, 1 and
no timeout, would measure one request per task). taskiq stores the result of every task once
a result backend is set, so ``noop`` and ``nap`` results are written too. The round trip is
``await (await echo.kiq(i)).wait_result(check_interval=POLL_SECONDS)`` (taskiq polls the
result backend). taskiq has no bulk enqueue API. taskiq-nats 0.6 is the last release for
taskiq 0.12, which taskiq-redis pins here (see requirements-peers.txt).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from typing import Any, ClassVar

from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask
from taskiq_nats import NATSObjectStoreResultBackend, PullBasedJetStreamBroker

from peers.base import (
    NAP_SECONDS,
    NATS_ENV,
    POLL_SECONDS,
    QUEUE,
    ROUND_TRIP_TIMEOUT,
    Broker,
    Kind,
    Place,
    System,
    WorkerCommand,
)
from peers.counter import mark_done

Tasks = dict[str, AsyncTaskiqDecoratedTask[Any, Any]]


def make_broker(nats_url: str) -> tuple[AsyncBroker, Tasks]:
    backend: NATSObjectStoreResultBackend[Any] = NATSObjectStoreResultBackend(nats_url)
    broker = PullBasedJetStreamBroker(
        nats_url,
        subject=f"{QUEUE}.tasks",
        stream_name=QUEUE,
        durable="bench",
        pull_consume_batch=100,
        pull_consume_timeout=POLL_SECONDS,
    ).with_result_backend(backend)

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
    return make_broker(os.environ[NATS_ENV])[0]


def __getattr__(name: str) -> Any:
    # `taskiq worker peers.taskiq_nats_adapter:broker` in the worker process.
    if name == "broker":
        return _worker_broker()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TaskiqNatsSystem(System):
    name = "taskiq-nats"
    broker = Broker.NATS
    requires: ClassVar[tuple[str, ...]] = ("nats",)

    def __init__(self) -> None:
        self.nats_url = ""
        self._broker: AsyncBroker | None = None
        self.tasks: Tasks = {}

    async def open(self, place: Place) -> None:
        assert place.nats_url is not None
        self.nats_url = place.nats_url
        self._broker, self.tasks = make_broker(place.nats_url)
        # Makes the stream and the durable consumer now, before the first task is sent.
        await self._broker.startup()

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()

    async def enqueue_one(self, kind: Kind, i: int) -> None:
        await self.tasks[kind.value].kiq(i)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [sys.executable, "-m", "taskiq", "worker", "peers.taskiq_nats_adapter:broker"]
        argv += ["--workers", "1", "--max-async-tasks", str(concurrency)]
        argv += ["--log-level", "WARNING"]
        return WorkerCommand(argv, {NATS_ENV: self.nats_url})

    async def round_trip(self, i: int) -> None:
        handle = await self.tasks["echo"].kiq(i)
        result = await handle.wait_result(check_interval=POLL_SECONDS, timeout=ROUND_TRIP_TIMEOUT)
        assert not result.is_err, f"echo({i}) failed: {result.error!r}"
        assert result.return_value == i, f"echo({i}) returned {result.return_value!r}"
