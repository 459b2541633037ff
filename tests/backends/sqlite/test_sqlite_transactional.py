"""Transactional enqueue on SQLite: sends made through the application's own sqlite3
connection exist only if its transaction commits."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import pigeon
from pigeon.worker import Worker


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "shop.db"


@pytest.fixture
def app(db: Path) -> Iterator[pigeon.App]:
    app = pigeon.App(f"sqlite:///{db}")

    @app.task(name="receipt")
    def receipt(order: int) -> int:
        return order

    yield app
    app.close_sync()


@pytest.fixture
def conn(db: Path, app: pigeon.App) -> Iterator[sqlite3.Connection]:
    app.backend_call_sync(lambda b: b.stats())  # the schema exists
    connection = sqlite3.connect(db)
    connection.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER)")
    connection.commit()
    yield connection
    connection.close()


def visible(app: pigeon.App, mid: str) -> bool:
    return app.backend_call_sync(lambda b: b.inspect(mid)) is not None


def test_sends_exist_only_once_the_transaction_commits(
    app: pigeon.App, conn: sqlite3.Connection
) -> None:
    receipt = app.tasks["receipt"]
    conn.execute("INSERT INTO orders VALUES (1)")
    with app.transaction(conn):
        promise = receipt.send(1)
    assert not visible(app, promise.id)  # written, but inside the open transaction
    conn.commit()
    assert visible(app, promise.id)


def test_a_rollback_leaves_no_message(app: pigeon.App, conn: sqlite3.Connection) -> None:
    receipt = app.tasks["receipt"]
    conn.execute("INSERT INTO orders VALUES (2)")
    with app.transaction(conn):
        promise = receipt.send(2)
    conn.rollback()
    assert not visible(app, promise.id)
    assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 0


def test_a_block_that_raises_writes_nothing(app: pigeon.App, conn: sqlite3.Connection) -> None:
    receipt = app.tasks["receipt"]
    sent: list[str] = []

    def place_order() -> None:
        with app.transaction(conn):
            sent.append(receipt.send(3).id)
            raise RuntimeError("the order failed")

    with pytest.raises(RuntimeError):
        place_order()
    conn.commit()
    assert not visible(app, sent[0])


def test_keyed_sends_in_a_transaction_return_the_first_messages_id(
    app: pigeon.App, conn: sqlite3.Connection
) -> None:
    receipt = app.tasks["receipt"]
    first = receipt.options(key="order-4").send(4)
    with app.transaction(conn):
        again = receipt.options(key="order-4").send(4)
    conn.commit()
    assert again.id == first.id


async def test_async_code_can_use_the_same_block(app: pigeon.App, conn: sqlite3.Connection) -> None:
    receipt = app.tasks["receipt"]
    worker = Worker(app, concurrency=2)
    running = asyncio.create_task(worker.run())
    try:
        async with app.transaction(conn):
            kept = receipt.send(5)
        conn.commit()
        async with app.transaction(conn):
            dropped = receipt.send(6)
        conn.rollback()
        assert await asyncio.wait_for(kept, 10) == 5
        assert await app.backend_call(lambda b: b.inspect(dropped.id)) is None
    finally:
        worker.stop()
        assert await running == 0


def test_the_sync_block_on_a_backend_that_cannot_is_a_config_error(
    conn: sqlite3.Connection,
) -> None:
    memory = pigeon.App("memory://")
    with pytest.raises(pigeon.ConfigError, match="sqlite://"), memory.transaction(conn):
        pass
    memory.close_sync()
