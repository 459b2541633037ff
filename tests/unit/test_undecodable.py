"""A message whose stored bytes cannot be decoded is dead-lettered with the reason, and the
worker goes on with the rest (written straight into SQLite's storage)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import pigeon
from pigeon.worker import Worker


async def test_a_corrupted_message_is_dead_lettered_and_the_worker_keeps_going(
    tmp_path: Path,
) -> None:
    db = tmp_path / "pigeon.db"
    app = pigeon.App(f"sqlite:///{db}")

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    held = add.options(delay=3600).send(1, 2)
    await held.sent()
    with sqlite3.connect(db) as conn:  # corrupt it where it is stored, make it due now
        conn.execute(
            "UPDATE messages SET body = ?, due = 0 WHERE id = ?", (b"\x00garbage{", held.id)
        )
    healthy = add.send(2, 3)
    worker = Worker(app, concurrency=4)
    running = asyncio.create_task(worker.run())
    try:
        assert await asyncio.wait_for(healthy, 10) == 5
        letters = await app.backend_call(lambda b: b.dead_letters())
        async with asyncio.timeout(10):
            while not letters:
                await asyncio.sleep(0.02)
                letters = await app.backend_call(lambda b: b.dead_letters())
        assert [d.id for d in letters] == [held.id]
        assert letters[0].reason.startswith("UndecodableMessage: the message could not be decoded")
        with pytest.raises(pigeon.TaskError) as raised:
            await asyncio.wait_for(held, 10)
        assert raised.value.type == "UndecodableMessage"
    finally:
        worker.stop()
        assert await running == 0
        await app.close()
