"""Transactional enqueue under load: 1,000 application transactions, 30% rolled back; none
of the rolled-back messages runs, every committed one does (PostgreSQL and SQLite)."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import pigeon
from pigeon.worker import Worker
from tests.chaos.jepsen import TABLES
from tests.servers import BACKEND_URLS, cleanup, make_url, require_server, scheme_of

TRANSACTIONS = int(os.environ.get("PIGEON_CHAOS_TRANSACTIONS", "1000"))
TRANSACTIONAL = [u for u in BACKEND_URLS if scheme_of(u) in {"sqlite", "postgresql"}]


def make_app(url: str, ran: list[int]) -> pigeon.App:
    app = pigeon.App(url)

    @app.task(name="ship")
    async def ship(order: int) -> int:
        ran.append(order)
        return order

    return app


async def run_transactions(app: pigeon.App, url: str, rng: random.Random) -> dict[int, str]:
    """Each transaction writes an order and sends ``ship``; 30% roll back. Returns the
    order number -> message id of the committed ones."""
    ship = app.tasks["ship"]
    committed: dict[int, str] = {}
    if scheme_of(url) == "sqlite":
        conn = sqlite3.connect(urlsplit(url).path)
        try:
            conn.execute("CREATE TABLE orders (id INTEGER)")
            conn.commit()
            for order in range(TRANSACTIONS):
                conn.execute("INSERT INTO orders VALUES (?)", (order,))
                async with app.transaction(conn):
                    promise = ship.send(order)
                if rng.random() < 0.3:
                    conn.rollback()
                else:
                    conn.commit()
                    committed[order] = await promise.sent()
        finally:
            conn.close()
        return committed
    import asyncpg

    pg = await asyncpg.connect(url.split("?", 1)[0])
    try:
        await pg.execute("CREATE TEMP TABLE orders (id integer)")
        for order in range(TRANSACTIONS):
            transaction = pg.transaction()
            await transaction.start()
            await pg.execute("INSERT INTO orders VALUES ($1)", order)
            async with app.transaction(pg):
                promise = ship.send(order)
            if rng.random() < 0.3:
                await transaction.rollback()
            else:
                await transaction.commit()
                committed[order] = await promise.sent()
    finally:
        await pg.close()
    return committed


@pytest.mark.parametrize("template", TRANSACTIONAL, ids=scheme_of)
async def test_rolled_back_sends_never_run_and_committed_ones_all_do(
    template: str, tmp_path: Path
) -> None:
    url = make_url(template, tmp_path)
    require_server(url)
    ran: list[int] = []
    app = make_app(url, ran)
    worker = Worker(make_app(url, ran), concurrency=50)
    await app.open()
    running = asyncio.create_task(worker.run())
    try:
        committed = await run_transactions(app, url, random.Random(3))
        backend = await app.open()
        ids = list(committed.values())
        async with asyncio.timeout(60):
            while len(await backend.results(ids)) < len(ids):
                await asyncio.sleep(0.02)
        stats = await backend.stats()
        left = sum(q.pending + q.scheduled + q.leased + q.waiting for q in stats.queues.values())
        assert left == 0  # nothing rolled back is waiting somewhere either
        assert sorted(ran) == sorted(committed)  # every committed order, no rolled-back one
        rolled_back = TRANSACTIONS - len(committed)
        TABLES.append(
            f"{scheme_of(url)}: {TRANSACTIONS} transactions, {rolled_back} rolled back\n"
            f"   committed ran {len(ran)} of {len(committed)}, rolled back ran 0"
        )
        assert 0.2 * TRANSACTIONS < rolled_back < 0.4 * TRANSACTIONS
    finally:
        worker.stop()
        assert await running == 0
        await worker.app.close()
        await app.close()
        await cleanup(url)
