"""A real App on SQLite (a file of the test's own) or memory, its dashboard, and an httpx
client on it through ASGI, all on the test's event loop: the App's home is that loop, so
the tests put messages in through the same backend the pages read."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import pigeon
from pigeon.backends import Backend
from pigeon.dashboard import TOKEN_ENV
from pigeon.dashboard import app as dashboard_app
from pigeon.message import Failure, Outcome

LOCAL = "http://127.0.0.1"


@dataclass
class Dashboard:
    app: pigeon.App
    client: httpx.AsyncClient

    @property
    def backend(self) -> Backend:
        return self.app.backend

    async def csrf(self, path: str = "/") -> str:
        """The CSRF token of a page, as its forms carry it (the cookie is set with it)."""
        page = await self.client.get(path)
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None, page.text
        return found.group(1)

    async def post(self, path: str, data: dict[str, Any]) -> httpx.Response:
        return await self.client.post(path, data={"csrf": await self.csrf(), **data})


def make_app(url: str) -> pigeon.App:
    app = pigeon.App(url)

    @app.task(name="dash.leak")
    async def leak(text: str, password: pigeon.Secret[str]) -> None:
        return None

    @app.task(name="dash.work", queue="work")
    async def work(n: int) -> int:
        return n

    return app


@pytest.fixture(params=["sqlite", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pigeon.db'}"
    return "memory://"


@pytest.fixture(autouse=True)
def _no_token_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def client_for(web: Any, client: str = "127.0.0.1", base: str = LOCAL) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=web, client=(client, 50000))
    return httpx.AsyncClient(transport=transport, base_url=base)


@pytest.fixture
async def pigeon_app(url: str) -> AsyncIterator[pigeon.App]:
    app = make_app(url)
    await app.open()
    try:
        yield app
    finally:
        await app.close()


@pytest.fixture
async def dashboard(pigeon_app: pigeon.App) -> AsyncIterator[Dashboard]:
    async with client_for(dashboard_app(pigeon_app)) as client:
        yield Dashboard(pigeon_app, client)


async def send_dead(app: pigeon.App, text: str, error: str, traceback: str = "") -> str:
    """Send ``dash.leak(text, Secret)`` and settle it dead with ``error``: its id."""
    promise = app.tasks["dash.leak"].send(text, pigeon.Secret("hunter2"))
    await promise.sent()
    [delivery] = await app.backend.fetch(["default"], 1, "test-worker")
    failure = Failure("ValueError", error, traceback)
    outcome = Outcome(delivery.id, delivery.attempt, "dead", error=failure)
    assert await app.backend.settle([outcome]) == [True]
    return delivery.id
