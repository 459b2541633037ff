"""Transactional enqueue through a psycopg (3) connection, sync and async.

SQLAlchemy and Django hold psycopg connections: ``App.transaction(conn)`` writes through
them as it does through asyncpg's. Every test uses a real psycopg connection of "the
application" to the test's schema, real commits and real rollbacks; outcomes are read
through the backend.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import asyncpg
import psycopg
import pytest

import pigeon
from pigeon.backends.postgres import PostgresBackend, settling
from pigeon.errors import ConfigError
from pigeon.message import QueueStats
from pigeon.promise import MessagePromise
from tests.conformance.messages import make_message, succeeded

from .conftest import server_dsn


class Boom(Exception):
    pass


@pytest.fixture
def sync_conn(pg_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    connection = psycopg.connect(server_dsn(pg_url))
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
async def async_conn(pg_url: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    connection = await psycopg.AsyncConnection.connect(server_dsn(pg_url))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def app(pg_url: str) -> AsyncIterator[pigeon.App]:
    made = pigeon.App(pg_url)

    @made.task(name="record")
    async def record(tag: str) -> str:
        return tag

    @made.task(name="after")
    async def after(tag: str) -> str:
        return tag

    await made.open()  # creates the schema
    try:
        yield made
    finally:
        await made.close()


def pending(stats: pigeon.message.Stats) -> int:
    return stats.queues.get("default", QueueStats()).pending


async def test_async_psycopg_commit_stores_the_sends_and_rollback_stores_none(
    app: pigeon.App, async_conn: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    record = app.tasks["record"]
    backend = await app.open()

    async with async_conn.transaction():
        async with app.transaction(async_conn):
            kept = record.send("kept")
            keyed = record.options(key="k1").send("keyed")
            again = record.options(key="k1").send("again")
            bulk = record.send_many((f"bulk {i}",) for i in range(3))
        assert await kept.sent() == kept.id
        assert await again.sent() == keyed.id  # the key's holder stands for both
        assert await backend.inspect(kept.id) is None  # not committed yet
    info = await backend.inspect(kept.id)
    assert info is not None
    assert info.state == "pending"
    assert pending(await backend.stats()) == 5

    doomed: list[pigeon.Promise[str]] = []

    async def fail_after_sending() -> None:
        async with async_conn.transaction():
            async with app.transaction(async_conn):
                doomed.append(record.send("doomed"))
                doomed.append(record.options(key="k2", priority=3).send("doomed keyed"))
            for promise in doomed:
                assert isinstance(promise, MessagePromise)
                await promise.sent()
            raise Boom

    with pytest.raises(Boom):
        await fail_after_sending()
    for promise in doomed:
        assert isinstance(promise, MessagePromise)
        assert await backend.inspect(promise.id) is None
    assert pending(await backend.stats()) == 5
    assert [await p.sent() for p in bulk] == [p.id for p in bulk if isinstance(p, MessagePromise)]


async def test_async_psycopg_in_autocommit_stores_in_a_transaction_of_its_own(
    app: pigeon.App, async_conn: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    await async_conn.set_autocommit(True)
    backend = await app.open()
    async with app.transaction(async_conn):
        promise = app.tasks["record"].options(key="solo").send("solo")
    assert await promise.sent() == promise.id
    assert async_conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    info = await backend.inspect(promise.id)
    assert info is not None
    assert info.state == "pending"


def sync_sends(
    app: pigeon.App, conn: psycopg.Connection[tuple[object, ...]], fail: bool
) -> list[pigeon.Promise[str]]:
    """Sends in a transaction of ``conn`` (with the sync form), as sync code does."""
    record = app.tasks["record"]
    sent: list[pigeon.Promise[str]] = []
    try:
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE orders (id integer)")
            conn.execute("INSERT INTO orders VALUES (1)")
            with app.transaction(conn):
                sent.append(record.send("plain"))
                sent.append(record.options(key="sync-key").send("keyed"))
                sent.extend(record.send_many((f"bulk {i}",) for i in range(1200)))
            if fail:
                raise Boom
    except Boom:
        pass
    return sent


async def test_sync_psycopg_commit_stores_the_sends_and_rollback_stores_none(
    app: pigeon.App, sync_conn: psycopg.Connection[tuple[object, ...]]
) -> None:
    backend = await app.open()
    # Sync code runs away from the event loop, as in a web request's thread.
    doomed = await asyncio.to_thread(sync_sends, app, sync_conn, True)
    for promise in doomed:
        assert isinstance(promise, MessagePromise)
        assert await backend.inspect(promise.id) is None
    assert pending(await backend.stats()) == 0

    kept = await asyncio.to_thread(sync_sends, app, sync_conn, False)
    assert pending(await backend.stats()) == 1202
    for promise in (kept[0], kept[1], kept[-1]):
        assert isinstance(promise, MessagePromise)
        info = await backend.inspect(promise.id)
        assert info is not None
        assert info.state == "pending"


async def test_sync_psycopg_with_autocommit_off_leaves_the_commit_to_the_caller(
    app: pigeon.App, sync_conn: psycopg.Connection[tuple[object, ...]]
) -> None:
    backend = await app.open()
    assert not sync_conn.autocommit

    def send(commit: bool) -> str:
        with app.transaction(sync_conn):
            promise = app.tasks["record"].send("implicit")
        assert isinstance(promise, MessagePromise)
        if commit:
            sync_conn.commit()
        else:
            sync_conn.rollback()
        return promise.id

    rolled_back = await asyncio.to_thread(send, False)
    committed = await asyncio.to_thread(send, True)
    assert await backend.inspect(rolled_back) is None
    assert await backend.inspect(committed) is not None


async def test_a_follow_up_enqueued_through_psycopg_waits_for_its_parent(
    app: pigeon.App, async_conn: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    backend = await app.open()
    parent = make_message(queue="default", task="record")
    child = make_message(queue="default", task="after", after=parent.id)
    async with async_conn.transaction():
        assert await backend.enqueue_in(async_conn, [parent, child]) == [parent.id, child.id]
    info = await backend.inspect(child.id)
    assert info is not None
    assert info.state == "waiting"
    [delivery] = await backend.fetch(["default"], 5, "w")
    assert delivery.id == parent.id
    assert await backend.settle([succeeded(delivery)]) == [True]
    [released] = await backend.fetch(["default"], 5, "w")
    assert released.id == child.id


@pytest.mark.parametrize("form", ["sync", "async"])
async def test_an_id_sent_again_through_psycopg_while_it_settles_is_not_stored_again(
    backend: PostgresBackend, pg_url: str, form: str
) -> None:
    """settled_since returns the id in the application's transaction, and it is undone."""
    m = make_message()
    assert await backend.enqueue([m]) == [m.id]
    [delivery] = await backend.fetch(["q"], 1, "w")
    settler = await asyncpg.connect(server_dsn(pg_url))
    try:
        settle = settler.transaction()
        await settle.start()
        assert await settling.settle(settler, backend._sql, [succeeded(delivery)]) == [True]
        resent = asyncio.create_task(_resend(backend, pg_url, m, form))
        await asyncio.sleep(0.3)
        assert not resent.done(), "the send did not wait for the settle's lock on the row"
        await settle.commit()
        assert await asyncio.wait_for(resent, 10) == [m.id]
    finally:
        await settler.close()
    info = await backend.inspect(m.id)
    assert info is not None
    assert info.state == "succeeded", info
    assert await backend.fetch(["q"], 5, "w") == []


async def _resend(
    backend: PostgresBackend, pg_url: str, m: pigeon.message.Message, form: str
) -> list[str]:
    if form == "async":
        conn = await psycopg.AsyncConnection.connect(server_dsn(pg_url))
        try:
            async with conn.transaction():
                return await backend.enqueue_in(conn, [m])
        finally:
            await conn.close()

    def sync() -> list[str]:
        with psycopg.connect(server_dsn(pg_url)) as conn, conn.transaction():
            return backend.enqueue_in_sync(conn, [m])

    return await asyncio.to_thread(sync)


async def test_a_sync_enqueue_refuses_connections_it_cannot_drive(
    backend: PostgresBackend, async_conn: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    with pytest.raises(ConfigError, match="psycopg 3 Connection"):
        backend.enqueue_in_sync(async_conn, [make_message()])
    with pytest.raises(ConfigError, match="psycopg 3 Connection"):
        backend.enqueue_in_sync(threading.Lock(), [make_message()])
