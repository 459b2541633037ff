"""The FastAPI example (``examples/fastapi/``), as its README runs it: the web app in this
process (its lifespan driven by asgi-lifespan, requests through httpx's ASGI transport) and a
real ``pigeon worker examples.fastapi.tasks:app`` process, on SQLite and on Redis.

The example reads its backend from ``PIGEON_URL``, so each test imports it afresh with the
test's own URL (a file of its own, a Redis key prefix of its own).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

import pigeon
from pigeon.message import new_id
from tests.processes import Workers
from tests.servers import BACKEND_URLS, cleanup, make_url, require_server, scheme_of

# The packages too: ``from . import tasks`` would find the old module as their attribute.
MODULES = ("examples", "examples.fastapi", "examples.fastapi.app", "examples.fastapi.tasks")
URLS = [u for u in BACKEND_URLS if scheme_of(u) in {"sqlite", "redis"}]


@pytest.fixture(params=URLS, ids=scheme_of)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url = make_url(request.param, tmp_path)
    require_server(url)
    yield url
    asyncio.run(cleanup(url))


@pytest.fixture
def example(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``examples.fastapi.app``, imported with ``PIGEON_URL`` set to the test's URL."""
    monkeypatch.setenv("PIGEON_URL", url)
    for name in MODULES:
        sys.modules.pop(name, None)
    yield importlib.import_module("examples.fastapi.app")
    for name in MODULES:
        sys.modules.pop(name, None)


@asynccontextmanager
async def serving(example: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the example while its lifespan runs (the App open)."""
    async with (
        LifespanManager(example.app, startup_timeout=30, shutdown_timeout=30) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://example"
        ) as client,
    ):
        yield client


@pytest.fixture
async def client(example: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the example, its lifespan running for the whole test."""
    async with serving(example) as client:
        yield client


@pytest.fixture
def worker(client: httpx.AsyncClient, url: str) -> Iterator[Workers]:
    """One worker process, started once the web app has opened the store (its schema)."""
    workers = Workers(url, "examples.fastapi.tasks:app")
    workers.start("-c", "4")
    yield workers
    workers.stop_all()


def server_sent_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of each event of a text/event-stream body."""
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def send_report(client: httpx.AsyncClient, pages: int, seconds: float) -> str:
    response = await client.post(
        "/reports", json={"title": "q3", "pages": pages, "seconds_per_page": seconds}
    )
    assert response.status_code == 202, response.text
    mid: str = response.json()["id"]
    return mid


async def test_a_sent_report_is_written_by_the_worker_and_the_endpoint_awaits_it(
    client: httpx.AsyncClient, worker: Workers
) -> None:
    mid = await send_report(client, pages=2, seconds=0.01)
    async with asyncio.timeout(60):
        response = await client.get(f"/reports/{mid}", params={"wait": 30})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": mid,
        "state": "succeeded",
        "result": {"title": "q3", "pages": 2, "words": 500},
    }


async def test_progress_streams_as_server_sent_events_then_the_result(
    client: httpx.AsyncClient, worker: Workers
) -> None:
    mid = await send_report(client, pages=5, seconds=0.4)
    async with asyncio.timeout(60):
        response = await client.get(f"/reports/{mid}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = server_sent_events(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "result"
    assert events[-1][1] == {
        "state": "succeeded",
        "result": {"title": "q3", "pages": 5, "words": 1250},
    }
    progress = [data for kind, data in events if kind == "progress"]
    assert kinds == ["progress"] * len(progress) + ["result"]
    assert len(progress) >= 2, events  # a report every 0.4 s, followed five times a second
    fractions = [p["fraction"] for p in progress]
    assert fractions == sorted(set(fractions))
    assert all(p["text"] == f"page {round(p['fraction'] * 5)}/5" for p in progress)


async def test_without_a_worker_the_report_is_pending_and_an_unknown_id_is_not_found(
    client: httpx.AsyncClient,
) -> None:
    mid = await send_report(client, pages=1, seconds=0)
    response = await client.get(f"/reports/{mid}", params={"wait": 0.3})
    assert response.status_code == 202
    assert response.json() == {"id": mid, "state": "pending"}
    unknown = new_id()
    assert (await client.get(f"/reports/{unknown}", params={"wait": 0.3})).status_code == 404
    assert (await client.get(f"/reports/{unknown}/events")).status_code == 404


async def test_shutdown_stores_the_sends_of_the_last_requests(
    example: ModuleType, url: str
) -> None:
    async with serving(example) as client:
        for path in ("/", "/pricing", "/signup"):
            response = await client.post("/visits", params={"path": path})
            assert response.status_code == 202
        # the lifespan ends right after the last response: the App stores what is batched
    async with pigeon.App(url) as reader:
        stats = await reader.backend.stats()
    assert stats.queues["default"].pending == 3
