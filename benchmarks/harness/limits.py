"""Raw limits, measured in the same run for context: how fast the pieces under every task
queue go when nothing but them runs.

- asyncio: ``await asyncio.create_task(coro())`` in a loop (one task made, run and awaited
  per iteration): the ceiling of any per-task asyncio bookkeeping;
- Redis: redis-py LPUSH of a small payload, pipelined in batches of 1,000 (no transaction),
  and one at a time with the asyncio client (each awaited: one round trip, what a single
  send can at best cost an asyncio program);
- PostgreSQL: asyncpg inserting rows (a bigint and a short text) into a plain table of a
  database of its own: ``executemany`` in one transaction, ``copy_records_to_table``, and one
  ``INSERT`` at a time (each awaited, autocommit: one round trip and one commit).

``raw_round_trip`` is the one-at-a-time figure of a system's own broker, measured by the
harness right before each system's (a) one by one, so that the two come from the same
minute of a machine whose speed drifts over a run.
"""

from __future__ import annotations

import asyncio
import time

PIPELINE = 1000


async def _nothing() -> None:
    return None


async def asyncio_create_and_await(n: int) -> float:
    """Tasks per second."""
    t0 = time.perf_counter()
    for _ in range(n):
        await asyncio.create_task(_nothing())
    return n / (time.perf_counter() - t0)


def redis_lpush_pipelined(redis_url: str, n: int) -> float:
    """LPUSHes per second, in pipelines of PIPELINE commands."""
    import redis

    client = redis.Redis.from_url(redis_url)
    key = "pigeon-bench:limit"
    try:
        t0 = time.perf_counter()
        for start in range(0, n, PIPELINE):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + PIPELINE, n)):
                pipe.lpush(key, f"task-{i}")
            pipe.execute()
        return n / (time.perf_counter() - t0)
    finally:
        client.delete(key)
        client.close()


async def redis_lpush_one_by_one(redis_url: str, n: int) -> float:
    """LPUSHes per second with redis-py's asyncio client, each awaited before the next."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    key = "pigeon-bench:limit-single"
    try:
        t0 = time.perf_counter()
        for i in range(n):
            await client.lpush(key, f"task-{i}")
        return n / (time.perf_counter() - t0)
    finally:
        await client.delete(key)
        await client.aclose()


async def asyncpg_insert_one_by_one(dsn: str, n: int) -> float:
    """Autocommitted INSERTs per second, each awaited, into a plain table (logged, so that
    each commit waits for its WAL flush as a durable send's does), dropped afterwards."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CREATE TABLE pigeon_bench_raw (id bigint, payload text)")
        try:
            t0 = time.perf_counter()
            for i in range(n):
                await connection.execute("INSERT INTO pigeon_bench_raw VALUES ($1, $2)", i, "one")
            return n / (time.perf_counter() - t0)
        finally:
            await connection.execute("DROP TABLE pigeon_bench_raw")
    finally:
        await connection.close()


async def jetstream_publish_one_by_one(nats_url: str, n: int) -> float:
    """Acknowledged JetStream publishes per second, each awaited (nats-py), to a file-backed
    stream of its own, deleted afterwards."""
    import nats

    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        await js.add_stream(name="pigeon_bench_raw", subjects=["pigeon-bench.raw"])
        try:
            t0 = time.perf_counter()
            for i in range(n):
                await js.publish("pigeon-bench.raw", f"task-{i}".encode())
            return n / (time.perf_counter() - t0)
        finally:
            await js.delete_stream("pigeon_bench_raw")
    finally:
        await client.close()


async def raw_round_trip(
    redis_url: str | None, postgres_dsn: str | None, n: int, nats_url: str | None = None
) -> float | None:
    """One awaited round trip per second of the broker's own asyncio client (redis-py LPUSH,
    asyncpg INSERT, nats-py JetStream publish), on the server named; None for a system with
    none of them."""
    if redis_url is not None:
        return await redis_lpush_one_by_one(redis_url, n)
    if postgres_dsn is not None:
        return await asyncpg_insert_one_by_one(postgres_dsn, n)
    if nats_url is not None:
        return await jetstream_publish_one_by_one(nats_url, n)
    return None


async def asyncpg_inserts(dsn: str, n: int) -> tuple[float, float, float]:
    """Rows per second: (``executemany`` in one transaction, ``copy_records_to_table``,
    one autocommitted ``INSERT`` at a time)."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CREATE TABLE rows (id bigint, payload text)")
        single = min(n, 5000)
        t0 = time.perf_counter()
        for i in range(single):
            await connection.execute("INSERT INTO rows VALUES ($1, $2)", i, "one")
        one_by_one = single / (time.perf_counter() - t0)
        records = [(i, f"task-{i}") for i in range(n)]
        t0 = time.perf_counter()
        async with connection.transaction():
            await connection.executemany("INSERT INTO rows VALUES ($1, $2)", records)
        executemany = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        await connection.copy_records_to_table("rows", records=records)
        copy = n / (time.perf_counter() - t0)
        return executemany, copy, one_by_one
    finally:
        await connection.close()
