"""The dashboard's server time per page with many finished messages in the backend.

    python benchmarks/dashboard_pages.py --backends sqlite,redis,postgresql -n 1000000

For each backend: store ``n`` messages whose outcomes are kept (90% succeeded, 5% failed,
5% dead-lettered, over two queues and four tasks), through the Backend API in batches
(enqueue, fetch, settle: what workers do, without running tasks), then time each page the
way a browser asks for it, over the dashboard's ASGI app in this process (no network): the
median and the slowest of ``--repeat`` requests, in milliseconds. The list pages are the
backend's ``list_messages`` (bounded index reads, never a count), the overview reads
``stats`` (whose cost grows with the live messages, not with the history) and the event log.

Redis gets a key prefix and PostgreSQL a schema of its own, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pigeon
from pigeon.dashboard import app as dashboard_app
from pigeon.message import Delivery, Failure, Message, Outcome, new_id

QUEUES = ("mail", "images")
TASKS = ("send_mail", "resize", "thumbnail", "notify")
BATCH = 1000
TTL = 86400.0  # every outcome kept for a day, as result_ttl's default


def url_for(backend: str, workdir: Path) -> str:
    tag = uuid.uuid4().hex[:8]
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'pages.db'}"
    if backend == "redis":
        return f"redis://127.0.0.1:6379/0?prefix=bench-pages-{tag}"
    if backend == "postgresql":
        return f"postgresql://postgres@127.0.0.1:5432/test?schema=bench_pages_{tag}"
    raise SystemExit(f"unknown backend {backend!r}: memory, sqlite, redis or postgresql")


async def fill(app: pigeon.App, n: int) -> float:
    """Store ``n`` settled messages; returns the seconds it took."""
    backend = app.backend
    t0 = time.perf_counter()
    done = 0
    while done < n:
        size = min(BATCH, n - done)
        batch = [
            Message(
                id=new_id(),
                task=TASKS[(done + i) % len(TASKS)],
                queue=QUEUES[(done + i) % len(QUEUES)],
                result_ttl=TTL,
                max_deliveries=1,
            )
            for i in range(size)
        ]
        await backend.enqueue(batch)
        deliveries: list[Delivery] = []
        while len(deliveries) < size:
            got = await backend.fetch(list(QUEUES), BATCH, "bench")
            if not got:
                break
            deliveries.extend(got)
        outcomes = []
        for k, d in enumerate(deliveries):
            if k % 20 == 0:
                error = Failure("ValueError", "bad input", id=d.id)
                outcomes.append(Outcome(d.id, d.attempt, "failed", error=error, result_ttl=TTL))
            elif k % 20 == 1:
                error = Failure("TimeoutError", "too slow", id=d.id)
                outcomes.append(Outcome(d.id, d.attempt, "dead", error=error, result_ttl=TTL))
            else:
                value = msgspec.Raw(msgspec.json.encode(k))
                outcomes.append(Outcome(d.id, d.attempt, "succeeded", value=value, result_ttl=TTL))
        await backend.settle(outcomes)
        done += size
    return time.perf_counter() - t0


async def time_pages(app: pigeon.App, repeat: int) -> dict[str, tuple[float, float]]:
    web = dashboard_app(app)
    transport = httpx.ASGITransport(app=web, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        listing = await client.get("/messages")
        older = _older_link(listing.text)
        some_id = _first_id(listing.text)
        pages = {
            "overview": "/",
            "workers": "/workers",
            "dead letters": "/dead",
            "messages": "/messages",
            "messages, older page": older or "/messages",
            "messages by queue": "/messages?queue=images",
            "messages by task": "/messages?task=thumbnail",
            "messages by state (dead)": "/messages?state=dead",
            "messages by error type": "/messages?error=TimeoutError",
            "messages by id prefix": f"/messages?prefix={some_id[:10]}",
            "message detail": f"/messages/{some_id}",
            "periodic": "/periodic",
            "limits": "/limits",
        }
        times: dict[str, tuple[float, float]] = {}
        for name, path in pages.items():
            samples = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                answer = await client.get(path)
                samples.append((time.perf_counter() - t0) * 1000)
                assert answer.status_code == 200, f"{path}: {answer.status_code}"
            times[name] = (statistics.median(samples), max(samples))
        return times


def _first_id(page: str) -> str:
    marker = '<a href="/messages/'
    at = page.index(marker) + len(marker)
    return page[at : page.index('"', at)]


def _older_link(page: str) -> str | None:
    marker = 'href="/messages?'
    for at in _finds(page, marker):
        end = page.index('"', at + 6)
        link = page[at + 6 : end].replace("&amp;", "&")
        if "cursor=" in link:
            return link
    return None


def _finds(text: str, marker: str) -> list[int]:
    found, at = [], text.find(marker)
    while at >= 0:
        found.append(at)
        at = text.find(marker, at + 1)
    return found


async def cleanup(url: str) -> None:
    if url.startswith("redis://"):
        import redis.asyncio as aredis

        prefix = url.split("prefix=", 1)[1]
        client = aredis.Redis()
        # every key starts with the hash tag {prefix}: (see pigeon.backends.redis.connections)
        keys = [k async for k in client.scan_iter(f"{{{prefix}}}:*", count=5000)]
        for i in range(0, len(keys), 1000):
            await client.unlink(*keys[i : i + 1000])
        await client.aclose()
    elif url.startswith("postgresql://"):
        import asyncpg

        schema = url.split("schema=", 1)[1]
        conn = await asyncpg.connect(url.split("?", 1)[0])
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def one(backend: str, n: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        url = url_for(backend, Path(workdir))
        app = pigeon.App(url)
        await app.open()
        try:
            took = await fill(app, n)
            print(f"\n{backend}: {n:,} finished messages stored in {took:.0f} s", flush=True)
            for name, (median, worst) in (await time_pages(app, repeat)).items():
                print(f"  {name:28} {median:8.1f} ms  (slowest {worst:.1f})", flush=True)
        finally:
            await app.close()
            await cleanup(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="memory,sqlite,redis,postgresql")
    parser.add_argument("-n", type=int, default=1_000_000, help="finished messages stored")
    parser.add_argument("--repeat", type=int, default=9, help="requests per page")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        asyncio.run(one(backend, args.n, args.repeat))


if __name__ == "__main__":
    main()
