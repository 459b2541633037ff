"""pigeon's own benchmarks: enqueue rate, processing rate of one worker process, latency.

    python benchmarks/bench.py                 # memory and sqlite, 20,000 tasks
    python benchmarks/bench.py -n 2000 --backends sqlite
    python benchmarks/bench.py --backends redis    # a Redis server on 127.0.0.1:6379
    python benchmarks/bench.py --backends postgresql    # PostgreSQL on 127.0.0.1:5432/test

Figures (this machine, one worker process, asyncio no-op task):
- enqueue/s single: sequential sends, each awaited until stored (one round trip each);
- enqueue/s bulk: 20,000 messages sent with ``send_many`` (the bulk API) until stored;
- processed/s: from the moment the worker is ready and the bulk send starts until the
  harness sees the last outcome stored (measured here, not reported by the worker);
- round trip p50/p99: sequential send -> await result, in ms.
The worker runs in its own process for sqlite and the servers (as in production); for
memory:// it can only run in this process, since that backend is one process's memory.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _serve(url: str, concurrency: int) -> None:
    from bench_app import make_app

    from pigeon.worker import Worker

    async def main() -> None:
        worker = Worker(make_app(url), concurrency=concurrency, heartbeat=0.2)
        await worker.run()

    asyncio.run(main())


async def _wait_ready(app: Any, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        stats = await app.backend_call(lambda b: b.stats())
        if stats.workers:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("the worker did not start within 20 s")


async def _wait_results(app: Any, n: int, deadline: float = 300.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        stats = await app.backend_call(lambda b: b.stats())
        if stats.results >= n:
            return
        await asyncio.sleep(0.005)
    raise RuntimeError(f"only {stats.results} of {n} results after {deadline} s")


async def bench(url: str, n: int, rtt: int, concurrency: int) -> dict[str, float]:
    from bench_app import make_app

    from pigeon.worker import Worker

    app = make_app(url)
    task = app.tasks["noop"]
    out: dict[str, float] = {}
    await app.open()

    # enqueue, single: one message per round trip
    single = min(n, 2000)
    t0 = time.perf_counter()
    for i in range(single):
        await task.send(i).sent()
    out["enqueue/s single"] = single / (time.perf_counter() - t0)
    await app.backend_call(lambda b: b.purge("default"))

    # the worker
    in_process = url.startswith("memory:")
    if in_process:
        worker = Worker(app, concurrency=concurrency, heartbeat=0.2)
        runner = asyncio.create_task(worker.run())
        proc = None
    else:
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=_serve, args=(url, concurrency), daemon=True)
        proc.start()
    await _wait_ready(app)

    # enqueue, bulk, while the worker drains: processed/s from here to the last outcome
    t0 = time.perf_counter()
    task.send_many((i,) for i in range(n))
    await app.flush()
    out["enqueue/s bulk"] = n / (time.perf_counter() - t0)
    await _wait_results(app, n + 0)
    out["processed/s"] = n / (time.perf_counter() - t0)

    # round trips
    samples = []
    for i in range(rtt):
        t = time.perf_counter()
        await task.send(i)
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    out["round trip p50 ms"] = statistics.median(samples)
    out["round trip p99 ms"] = samples[int(len(samples) * 0.99) - 1]

    if in_process:
        worker.stop()
        await runner
    elif proc is not None:
        proc.terminate()
        proc.join(30)
    await app.close()
    return out


async def _delete_redis_keys(url: str) -> None:
    import redis.asyncio as aioredis

    server, _, query = url.partition("?")
    prefix = query.removeprefix("prefix=")
    client = aioredis.Redis.from_url(server)
    try:
        keys = [k async for k in client.scan_iter(match=f"{{{prefix}}}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
    finally:
        await client.aclose()


async def _drop_postgres_schema(url: str) -> None:
    import asyncpg

    server, _, query = url.partition("?")
    schema = query.removeprefix("schema=")
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-n", type=int, default=20_000, help="tasks to process (default 20,000)")
    parser.add_argument("--rtt", type=int, default=300, help="sequential round trips")
    parser.add_argument("-c", "--concurrency", type=int, default=200)
    parser.add_argument(
        "--backends", default="memory,sqlite", help="of memory,sqlite,redis,postgresql"
    )
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379/0", help="the Redis server (without ?prefix)"
    )
    parser.add_argument(
        "--postgresql",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="the PostgreSQL database (without ?schema)",
    )
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backends.split(","):
            url = {
                "memory": "memory://",
                "sqlite": f"sqlite:///{tmp}/bench.db",
                # a prefix of its own per run, deleted afterwards
                "redis": f"{args.redis}?prefix=pigeon-bench-{uuid.uuid4().hex[:8]}",
                # a schema of its own per run, dropped afterwards
                "postgresql": f"{args.postgresql}?schema=pigeon_bench_{uuid.uuid4().hex[:8]}",
            }[name]
            try:
                rows.append((name, asyncio.run(bench(url, args.n, args.rtt, args.concurrency))))
            finally:
                if name == "redis":
                    asyncio.run(_delete_redis_keys(url))
                if name == "postgresql":
                    asyncio.run(_drop_postgres_schema(url))
    keys = list(rows[0][1])
    print(f"\n{'':22}" + "".join(f"{name:>14}" for name, _ in rows))
    for key in keys:
        print(f"{key:22}" + "".join(f"{r[key]:>14,.2f}" for _, r in rows))


if __name__ == "__main__":
    main()
