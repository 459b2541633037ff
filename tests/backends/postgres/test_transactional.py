"""Transactional enqueue: a send inside the application's transaction exists only if it commits.

Every test uses a real asyncpg connection of "the application", real commits and real
rollbacks, and a real worker (in this process, on its own App and connections).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

import pigeon
from pigeon.errors import ConfigError, PigeonError
from pigeon.promise import MessagePromise
from pigeon.worker import Worker

from .conftest import server_dsn

DEADLINE = 10.0


class Boom(Exception):
    pass


def ids(promises: list[pigeon.Promise[str]]) -> list[str]:
    out = []
    for promise in promises:
        assert isinstance(promise, MessagePromise)
        out.append(promise.id)
    return out


def make_app(url: str, ran: list[str]) -> pigeon.App:
    app = pigeon.App(url)

    @app.task(name="record")
    async def record(tag: str) -> str:
        ran.append(tag)
        return tag

    return app


@contextlib.asynccontextmanager
async def worker_running(url: str, ran: list[str]) -> AsyncIterator[None]:
    worker = Worker(make_app(url, ran), concurrency=4, heartbeat=0.5)
    running = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.stop()
        assert await running == 0
        await worker.app.close()


@pytest.fixture
async def conn(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The application's own connection, its tables temporary ones."""
    connection = await asyncpg.connect(server_dsn(pg_url))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def app(pg_url: str) -> AsyncIterator[tuple[pigeon.App, list[str]]]:
    ran: list[str] = []
    made = make_app(pg_url, ran)
    await made.open()  # creates the schema
    try:
        yield made, ran
    finally:
        await made.close()


async def test_send_in_a_committed_transaction_is_invisible_until_the_commit_then_runs(
    pg_url: str, app: tuple[pigeon.App, list[str]], conn: asyncpg.Connection
) -> None:
    the_app, ran = app
    record = the_app.tasks["record"]
    backend = await the_app.open()

    async with worker_running(pg_url, ran):
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE orders (id integer)")
            await conn.execute("INSERT INTO orders VALUES (1)")
            async with the_app.transaction(conn):
                promise = record.send("committed")
            assert await promise.sent() == promise.id
            # Written, but only inside the application's transaction: nobody else sees it.
            assert await backend.inspect(promise.id) is None
            assert await backend.fetch(["default"], 10, "intruder") == []
            await asyncio.sleep(0.2)  # an idle worker has had every chance to take it
            assert ran == []

        assert await asyncio.wait_for(promise, DEADLINE) == "committed"

    assert ran == ["committed"]
    assert await conn.fetchval("SELECT count(*) FROM orders") == 1


async def test_send_in_a_rolled_back_transaction_is_never_visible_and_never_runs(
    pg_url: str, app: tuple[pigeon.App, list[str]], conn: asyncpg.Connection
) -> None:
    the_app, ran = app
    record = the_app.tasks["record"]
    backend = await the_app.open()

    doomed: list[pigeon.Promise[str]] = []

    async def fail_after_sending() -> None:
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE orders (id integer)")
            async with the_app.transaction(conn):
                doomed.extend(record.send(f"rolled back {i}") for i in range(3))
            for promise in doomed:
                assert isinstance(promise, MessagePromise)
                await promise.sent()
            raise Boom  # the application's transaction fails after the sends

    async with worker_running(pg_url, ran):
        with pytest.raises(Boom):
            await fail_after_sending()

        # A send made afterwards, outside any transaction, runs: the worker was there.
        control = record.send("control")
        assert await asyncio.wait_for(control, DEADLINE) == "control"
        await asyncio.sleep(0.2)

    assert ran == ["control"]
    for mid in ids(doomed):
        assert await backend.inspect(mid) is None
    assert await backend.results(ids(doomed)) == {}
    stats = await backend.stats()
    assert stats.queues.get("default", pigeon.message.QueueStats()) == pigeon.message.QueueStats()
    assert await conn.fetchval("SELECT to_regclass('orders')") is None


async def test_a_savepoint_rolled_back_takes_its_sends_with_it(
    pg_url: str, app: tuple[pigeon.App, list[str]], conn: asyncpg.Connection
) -> None:
    the_app, ran = app
    record = the_app.tasks["record"]
    backend = await the_app.open()

    dropped: list[pigeon.Promise[str]] = []

    async def fail_in_a_savepoint() -> None:
        async with conn.transaction():  # nested: a savepoint
            async with the_app.transaction(conn):
                dropped.append(record.send("dropped"))
            raise Boom

    async with conn.transaction():
        async with the_app.transaction(conn):
            kept = record.send("kept")
        with pytest.raises(Boom):
            await fail_in_a_savepoint()

    assert await backend.inspect(ids(dropped)[0]) is None
    info = await backend.inspect(kept.id)
    assert info is not None
    assert info.state == "pending"
    async with worker_running(pg_url, ran):
        assert await asyncio.wait_for(kept, DEADLINE) == "kept"
    assert ran == ["kept"]


async def test_a_block_that_raises_sends_nothing_and_its_promises_reject(
    app: tuple[pigeon.App, list[str]], conn: asyncpg.Connection
) -> None:
    the_app, _ = app
    record = the_app.tasks["record"]
    backend = await the_app.open()

    sent: list[pigeon.Promise[str]] = []

    async def raise_in_the_block() -> None:
        async with the_app.transaction(conn):
            sent.append(record.send("never"))
            raise Boom

    async with conn.transaction():
        with pytest.raises(Boom):
            await raise_in_the_block()

    [promise] = sent
    assert isinstance(promise, MessagePromise)
    with pytest.raises(PigeonError, match="not sent"):
        await promise.sent()
    assert await backend.inspect(promise.id) is None


async def test_sends_outside_the_block_are_not_part_of_the_transaction(
    app: tuple[pigeon.App, list[str]], conn: asyncpg.Connection
) -> None:
    the_app, _ = app
    record = the_app.tasks["record"]
    backend = await the_app.open()

    sent: list[pigeon.Promise[str]] = []

    async def fail_after_sending() -> None:
        async with conn.transaction():
            async with the_app.transaction(conn):
                sent.append(record.send("inside"))
            outside = record.send("outside")  # the App's own connection: stored at once
            assert isinstance(outside, MessagePromise)
            await outside.sent()
            sent.append(outside)
            raise Boom

    with pytest.raises(Boom):
        await fail_after_sending()

    inside, outside = ids(sent)
    assert await backend.inspect(inside) is None
    info = await backend.inspect(outside)
    assert info is not None
    assert info.state == "pending"


async def test_a_connection_outside_a_transaction_stores_the_sends_at_once(
    app: tuple[pigeon.App, list[str]], conn: asyncpg.Connection
) -> None:
    the_app, _ = app
    record = the_app.tasks["record"]
    backend = await the_app.open()

    async with the_app.transaction(conn):
        first = record.options(key="once").send("first")
        second = record.options(key="once").send("second")

    assert await first.sent() == await second.sent() == first.id
    info = await backend.inspect(first.id)
    assert info is not None
    assert info.state == "pending"
    assert (await backend.stats()).queues["default"].pending == 1


async def test_transactional_enqueue_on_a_backend_that_cannot_is_a_config_error(
    conn: asyncpg.Connection,
) -> None:
    app = pigeon.App("memory://")
    try:
        with pytest.raises(ConfigError, match="postgresql"):
            async with app.transaction(conn):
                pass
    finally:
        await app.close()


async def test_send_many_in_a_transaction_commits_or_rolls_back_with_it(
    pg_url: str, app: tuple[pigeon.App, list[str]], conn: asyncpg.Connection
) -> None:
    the_app, ran = app
    record = the_app.tasks["record"]
    backend = await the_app.open()

    async def fail_after_sending() -> None:
        async with conn.transaction():
            async with the_app.transaction(conn):
                record.send_many((f"doomed {i}",) for i in range(1500))
            raise Boom

    with pytest.raises(Boom):
        await fail_after_sending()
    assert (await backend.stats()).queues.get("default") is None

    async with conn.transaction():
        async with the_app.transaction(conn):
            single = record.send("single")
            promises = record.send_many((f"bulk {i}",) for i in range(1500))  # 2 statements
            record.fire_many([("fired",)])
        assert await promises[-1].sent() == ids(promises)[-1]
        assert await backend.inspect(ids(promises)[0]) is None  # not committed yet
    assert (await backend.stats()).queues["default"].pending == 1502

    async with worker_running(pg_url, ran):
        results = await asyncio.wait_for(pigeon.Promise.all([single, *promises]), 60)
    assert results == ["single", *(f"bulk {i}" for i in range(1500))]
    assert "fired" in ran
