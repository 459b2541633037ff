"""The SQLite schema is versioned (``PRAGMA user_version``): a database made by an older
pigeon is brought up to date when it is opened, keeping what it stores."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pigeon.backends.base import MessageQuery
from pigeon.backends.sqlite import SCHEMA_VERSION, SQLiteBackend
from pigeon.errors import ConfigError
from pigeon.message import Event, Message, Outcome, Progress, Slot, Take, new_id

#: The tables each schema version added after version 1.
ADDED_IN_2 = ("locks",)
ADDED_IN_3 = ("buckets", "slots", "progress", "events")
ADDED_IN_4 = ("schedules",)
ADDED_IN_5 = ("pauses",)
ADDED_IN_6 = ("history",)
ADDED = {2: ADDED_IN_2, 3: ADDED_IN_3, 4: ADDED_IN_4, 5: ADDED_IN_5, 6: ADDED_IN_6}


async def left_by_version(
    db: Path, version: int, store: Callable[[SQLiteBackend], Awaitable[None]] | None = None
) -> Message:
    """The database at ``db`` as a schema-``version`` pigeon left it: a message enqueued
    and what ``store`` writes, by today's backend, then every table added since dropped."""
    backend = SQLiteBackend(f"sqlite:///{db}")
    message = Message(new_id(), "t", "q")
    await backend.enqueue([message])
    if store is not None:
        await store(backend)
    await backend.close()
    with sqlite3.connect(db) as conn:
        for later in range(version + 1, SCHEMA_VERSION + 1):
            for table in ADDED[later]:
                conn.execute(f"DROP TABLE {table}")
        conn.execute(f"PRAGMA user_version = {version}")
    return message


def user_version(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


async def test_a_version_1_database_is_upgraded_on_open_and_keeps_its_messages(
    tmp_path: Path,
) -> None:
    db = tmp_path / "pigeon.db"
    message = await left_by_version(db, 1)  # what pigeon 0.1 made

    upgraded = SQLiteBackend(f"sqlite:///{db}")
    try:
        await upgraded.open()
        assert user_version(db) == SCHEMA_VERSION == 6
        assert await upgraded.lock("leader", "a", 30) is True
        assert await upgraded.take([Take("b", 1.0)]) == [0.0]
        await upgraded.mark_schedules({"tick": 1000.5})
        assert await upgraded.schedules(["tick"]) == {"tick": 1000.5}
        [delivery] = await upgraded.fetch(["q"], 1, "w")
        assert delivery.id == message.id
    finally:
        await upgraded.close()


async def test_a_version_2_database_is_upgraded_on_open_and_keeps_its_messages(
    tmp_path: Path,
) -> None:
    db = tmp_path / "pigeon.db"

    async def store(backend: SQLiteBackend) -> None:
        assert await backend.lock("leader", "a", 30) is True

    message = await left_by_version(db, 2, store)

    upgraded = SQLiteBackend(f"sqlite:///{db}")
    try:
        await upgraded.open()
        assert user_version(db) == SCHEMA_VERSION == 6
        assert await upgraded.lock("leader", "b", 30) is False  # version 2's lock is kept
        assert await upgraded.take([Take("b", 1.0)]) == [0.0]
        assert await upgraded.acquire([Slot("s", "h")]) == [True]
        await upgraded.report([Progress(message.id, 0.5)], ttl=60)
        assert await upgraded.progress([message.id]) == {message.id: Progress(message.id, 0.5)}
        cursor, _ = await upgraded.read_events(None)
        await upgraded.publish([Event("sent", message.id)])
        assert await upgraded.read_events(cursor) == ("1", [Event("sent", message.id)])
        [delivery] = await upgraded.fetch(["q"], 1, "w")
        assert delivery.id == message.id
    finally:
        await upgraded.close()


async def test_a_version_3_database_is_upgraded_on_open_and_keeps_what_it_stores(
    tmp_path: Path,
) -> None:
    db = tmp_path / "pigeon.db"

    async def store(backend: SQLiteBackend) -> None:
        assert await backend.lock("leader", "a", 30) is True
        assert await backend.take([Take("b", 60.0)]) == [0.0]

    message = await left_by_version(db, 3, store)

    upgraded = SQLiteBackend(f"sqlite:///{db}")
    try:
        await upgraded.open()
        assert user_version(db) == SCHEMA_VERSION == 6
        assert await upgraded.lock("leader", "b", 30) is False  # version 3's rows are kept
        [wait] = await upgraded.take([Take("b", 60.0)])
        assert wait > 0  # version 3's bucket is kept
        assert await upgraded.schedules(["tick"]) == {}
        await upgraded.mark_schedules({"tick": 1000.5})
        assert await upgraded.schedules(["tick"]) == {"tick": 1000.5}
        [delivery] = await upgraded.fetch(["q"], 1, "w")
        assert delivery.id == message.id
    finally:
        await upgraded.close()


async def test_a_version_4_database_is_upgraded_on_open_and_can_pause_its_queues(
    tmp_path: Path,
) -> None:
    db = tmp_path / "pigeon.db"

    async def store(backend: SQLiteBackend) -> None:
        await backend.mark_schedules({"tick": 1000.5})

    message = await left_by_version(db, 4, store)

    upgraded = SQLiteBackend(f"sqlite:///{db}")
    try:
        await upgraded.open()
        assert user_version(db) == SCHEMA_VERSION == 6
        assert await upgraded.schedules(["tick"]) == {"tick": 1000.5}  # version 4's rows kept
        assert await upgraded.paused() == {}
        pause = await upgraded.pause("q", "upgraded")
        assert await upgraded.paused() == {"q": pause}
        assert await upgraded.fetch(["q"], 1, "w") == []
        assert await upgraded.resume("q") is True
        [delivery] = await upgraded.fetch(["q"], 1, "w")
        assert delivery.id == message.id
    finally:
        await upgraded.close()


async def test_a_version_5_database_is_upgraded_on_open_and_lists_its_messages(
    tmp_path: Path,
) -> None:
    db = tmp_path / "pigeon.db"

    async def store(backend: SQLiteBackend) -> None:
        await backend.pause("p", "kept")

    message = await left_by_version(db, 5, store)

    upgraded = SQLiteBackend(f"sqlite:///{db}")
    try:
        await upgraded.open()
        assert user_version(db) == SCHEMA_VERSION == 6
        assert list(await upgraded.paused()) == ["p"]  # version 5's rows kept
        page = await upgraded.list_messages(MessageQuery())
        assert [(r.id, r.state) for r in page.rows] == [(message.id, "pending")]
        [delivery] = await upgraded.fetch(["q"], 1, "w")
        await upgraded.settle([Outcome(delivery.id, delivery.attempt, "succeeded")])
        page = await upgraded.list_messages(MessageQuery(queue="q"))
        assert [(r.id, r.state) for r in page.rows] == [(message.id, "succeeded")]
    finally:
        await upgraded.close()


async def test_a_database_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "pigeon.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    backend = SQLiteBackend(f"sqlite:///{db}")
    with pytest.raises(ConfigError, match="newer pigeon"):
        await backend.open()
    await backend.close()
