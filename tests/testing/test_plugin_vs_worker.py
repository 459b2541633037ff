"""The same scenarios, run once by pigeon.testing's in-process worker on ``memory://`` and
once by a real ``pigeon worker`` process on SQLite, must end the same way.

This is what makes the plugin worth trusting: it adds no second, simpler path. Each test
sends through the App as a user's code would, lets the work run (``World.settle``: the
in-process worker's ``drain`` and ``advance``, or waiting for the process), and compares
the outcomes and the dead letters, which must be identical on both.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import pigeon
from pigeon.testing import InProcessWorker
from tests.processes import Workers
from tests.testing import shop

Outcome = tuple[Any, ...]


@pytest.fixture(params=["in-process", "worker-process"])
def pigeon_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "in-process":
        return "memory://"
    return f"sqlite:///{tmp_path / 'shop.db'}"


class World:
    """Where the work runs: the plugin's worker, or a real worker process."""

    def __init__(self, harness: InProcessWorker, process: Workers | None) -> None:
        self.harness = harness
        self.process = process

    async def settle(self, promises: Sequence[pigeon.Promise[Any]]) -> list[Outcome]:
        """Let everything sent run to its end; each promise's outcome, in order."""
        if self.process is None:
            await self.harness.drain()
            await self.harness.advance(120)  # retries' backoff, delays, expiries, deferrals
        else:
            assert self.harness.worker is None  # only the process runs tasks
        async with asyncio.timeout(60):
            settled = await pigeon.Promise.all_settled(promises)
        return [_outcome(s) for s in settled]

    async def dead(self) -> list[tuple[str, str]]:
        """The dead letters: (task, the first word of the reason), in task order."""
        letters = await self.harness.backend.dead_letters()
        return sorted((d.task, d.reason.split(":")[0]) for d in letters)


def _outcome(s: pigeon.Settled) -> Outcome:
    if s.status == "fulfilled":
        return ("fulfilled", s.value)
    reason = s.reason
    return ("rejected", type(reason).__name__, getattr(reason, "type", None))


@pytest.fixture
async def world(pigeon_worker: InProcessWorker, pigeon_url: str) -> AsyncIterator[World]:
    if pigeon_url.startswith("memory"):
        yield World(pigeon_worker, None)
        return
    await pigeon_worker.app.open()  # the schema exists before the worker process starts
    workers = Workers(pigeon_url, "tests.testing.shop:app")
    workers.start("-c", "4")
    try:
        yield World(pigeon_worker, workers)
    finally:
        workers.stop_all()


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex


async def test_arguments_round_trip_through_type_hints(world: World) -> None:
    placed = datetime(2026, 5, 6, 7, 8, tzinfo=UTC)
    got = await world.settle(
        [shop.total.send(shop.Order(1, placed, ["x", "y", "z"]), rate=2.0), shop.add.send(2, 40)]
    )
    assert got == [("fulfilled", 60.0), ("fulfilled", 42)]


async def test_retries_then_success_or_dead_letter(world: World, key: str) -> None:
    got = await world.settle(
        [shop.flaky.send(key + "-a", 1), shop.flaky.send(key + "-b", 5), shop.broken.send("no")]
    )
    assert got == [
        ("fulfilled", "ok after 2"),
        ("rejected", "TaskError", "ConnectionError"),  # three attempts, all failed
        ("rejected", "TaskError", "ValueError"),
    ]
    assert await world.dead() == [("shop.broken", "ValueError"), ("shop.flaky", "ConnectionError")]


async def test_follow_ups_and_joins(world: World) -> None:
    got = await world.settle(
        [
            shop.add.send(1, 2).then(shop.double),
            pigeon.Promise.all([shop.add.send(1, 1), shop.add.send(2, 2)]).then(shop.summed),
            shop.broken.send("gone").catch(shop.recover),
            shop.broken.send("skipped").then(shop.double),
        ]
    )
    assert got == [
        ("fulfilled", 6),
        ("fulfilled", 6),
        ("fulfilled", "recovered from ValueError"),
        ("rejected", "TaskError", "ValueError"),  # the rejection passes through then()
    ]


async def test_cancelled_and_expired_messages_never_run(world: World) -> None:
    cancelled = shop.add.options(delay=30).send(1, 1)
    await cancelled.sent()
    assert await cancelled.cancel() is True
    expired = shop.add.options(delay=0.5, expires=0.1).send(2, 2)
    got = await world.settle([cancelled, expired])
    assert got == [("rejected", "Cancelled", None), ("rejected", "TaskError", "Expired")]
    assert await world.dead() == [("shop.add", "Expired")]


async def test_a_limit_defers_and_every_message_runs(world: World) -> None:
    got = await world.settle([shop.limited.send(n) for n in range(4)])
    assert got == [("fulfilled", n) for n in range(4)]


async def test_a_rate_limit_spaces_starts_and_every_message_runs(world: World) -> None:
    got = await world.settle([shop.rated.send(n) for n in range(6)])
    assert got == [("fulfilled", n) for n in range(6)]


async def test_an_unknown_task_is_dead_lettered(world: World, pigeon_url: str) -> None:
    other = pigeon.App(pigeon_url)
    if pigeon_url.startswith("memory"):
        other.backend = world.harness.backend  # one store, as two processes share a file

    @other.task(name="shop.not_here")
    async def not_here() -> None: ...

    try:
        got = await world.settle([not_here.send()])
    finally:
        await other.close()
    assert got == [("rejected", "TaskError", "TaskNotFound")]
    assert await world.dead() == [("shop.not_here", "TaskNotFound")]
