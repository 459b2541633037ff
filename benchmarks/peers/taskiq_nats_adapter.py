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

import functools
import os
from typing import Any, ClassVar

from taskiq import AsyncBroker
from taskiq_nats import NATSObjectStoreResultBackend, PullBasedJetStreamBroker

from peers.base import NATS_ENV, POLL_SECONDS, QUEUE, Broker, Place
from peers.taskiq_common import TaskiqClient, Tasks, register


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
    return broker, register(broker)


@functools.cache
def _worker_broker() -> AsyncBroker:
    return make_broker(os.environ[NATS_ENV])[0]


def __getattr__(name: str) -> Any:
    # `taskiq worker peers.taskiq_nats_adapter:broker` in the worker process.
    if name == "broker":
        return _worker_broker()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TaskiqNatsSystem(TaskiqClient):
    name = "taskiq-nats"
    broker = Broker.NATS
    requires: ClassVar[tuple[str, ...]] = ("nats",)
    module = "peers.taskiq_nats_adapter"
    env = NATS_ENV
    make = staticmethod(make_broker)

    async def open(self, place: Place) -> None:
        assert place.nats_url is not None
        await self.start(place.nats_url)
