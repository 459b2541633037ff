"""What the two taskiq rows (``taskiq_adapter`` on Redis, ``taskiq_nats_adapter`` on NATS
JetStream) share: the three tasks registered on a broker, and the client side as the
harness drives it. Each adapter says which broker and result backend it builds."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask

from peers.base import NAP_SECONDS, POLL_SECONDS, ROUND_TRIP_TIMEOUT, Kind, System, WorkerCommand
from peers.counter import mark_done

Tasks = dict[str, AsyncTaskiqDecoratedTask[Any, Any]]


def register(broker: AsyncBroker) -> Tasks:
    """The benchmark's tasks on ``broker``: the same three as every other system."""

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

    return {"noop": noop, "nap": nap, "echo": echo}


class TaskiqClient(System):
    """A taskiq system's client side; ``make`` builds the broker and its tasks from the
    address of the place, ``module`` names the adapter the worker imports, and ``env`` is
    the environment variable that hands the address to the worker."""

    module: str
    env: str
    make: Callable[[str], tuple[AsyncBroker, Tasks]]

    def __init__(self) -> None:
        self.address = ""
        self._broker: AsyncBroker | None = None
        self.tasks: Tasks = {}

    async def start(self, address: str) -> None:
        self.address = address
        self._broker, self.tasks = type(self).make(address)
        # Makes the broker's queue structures now (a Redis consumer group, a JetStream
        # stream and its durable consumer), before the first task is sent: one made later by
        # the worker would skip what is queued.
        await self._broker.startup()

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()

    async def enqueue_one(self, kind: Kind, i: int) -> None:
        await self.tasks[kind.value].kiq(i)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [sys.executable, "-m", "taskiq", "worker", f"{self.module}:broker"]
        argv += ["--workers", "1", "--max-async-tasks", str(concurrency)]
        argv += ["--log-level", "WARNING"]
        return WorkerCommand(argv, {self.env: self.address})

    async def round_trip(self, i: int) -> None:
        handle = await self.tasks["echo"].kiq(i)
        result = await handle.wait_result(check_interval=POLL_SECONDS, timeout=ROUND_TRIP_TIMEOUT)
        assert not result.is_err, f"echo({i}) failed: {result.error!r}"
        assert result.return_value == i, f"echo({i}) returned {result.return_value!r}"
