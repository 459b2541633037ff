"""``pigeon.integrations.asgi``: the App opens with a web app's lifespan and closes, storing
what is still batched, at its end; endpoints send and wait on the server's event loop.

In process: a real ``Worker`` on the test's loop where something must run, SQLite where what
was stored is read after the App closed. ``tests/integrations/test_fastapi_example.py`` runs
the example against worker processes.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations of the endpoints at
# run time, and these endpoints, defined inside the tests, name local variables.
import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI

import pigeon
from pigeon.integrations.asgi import LifespanMiddleware, lifespan
from pigeon.worker import Worker


def make_app(url: str) -> pigeon.App:
    app = pigeon.App(url)

    @app.task(name="asgi.double")
    async def double(n: int) -> int:
        return 2 * n

    @app.task(name="asgi.note")
    async def note(text: str) -> None:
        return None

    return app


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pigeon.db'}"


async def pending(url: str, queue: str = "default") -> int:
    """How many messages wait in ``queue``, read by an App of its own."""
    async with pigeon.App(url) as reader:
        stats = await reader.backend.stats()
    found = stats.queues.get(queue)
    return found.pending if found is not None else 0


@asynccontextmanager
async def serving(asgi_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan started, a client on it; the lifespan ends when the block does."""
    async with (
        LifespanManager(asgi_app, startup_timeout=30, shutdown_timeout=30) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
        ) as client,
    ):
        yield client


@asynccontextmanager
async def working(app: pigeon.App) -> AsyncIterator[None]:
    worker = Worker(app, concurrency=4, heartbeat=60)
    running = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.stop()
        await running


async def test_fastapi_lifespan_opens_the_app_and_shutdown_stores_what_is_still_batched(
    url: str,
) -> None:
    app = make_app(url)
    web = FastAPI(lifespan=lifespan(app))

    @web.post("/notes")
    async def post_note(text: str) -> None:
        app.tasks["asgi.note"].fire(text)  # not awaited: stored with the next batch

    async with serving(web) as client:
        for i in range(3):
            assert (await client.post("/notes", params={"text": f"n{i}"})).status_code == 200
    assert await pending(url) == 3


async def test_async_and_sync_endpoints_send_and_wait_on_the_servers_loop() -> None:
    app = make_app("memory://")
    pigeon_lifespan = lifespan(app)
    web = FastAPI(lifespan=pigeon_lifespan)
    double = app.tasks["asgi.double"]

    @web.get("/async/{n}")
    async def on_the_loop(
        n: int, tasks: Annotated[pigeon.App, Depends(pigeon_lifespan.get_app)]
    ) -> int:
        assert tasks is app
        value: int = await tasks.tasks["asgi.double"].send(n)
        return value

    @web.get("/sync/{n}")
    def in_a_thread(n: int) -> int:
        # FastAPI runs a plain function in a thread: send blocks until the message is
        # stored, and result() blocks on the App's home loop, the server's.
        return double.send(n).result(timeout=10)

    async with serving(web) as client, working(app):
        assert app._home.loop is asyncio.get_running_loop()  # no thread of its own
        assert (await client.get("/async/21")).json() == 42
        assert (await client.get("/sync/4")).json() == 8


async def test_lifespan_nests_in_a_lifespan_of_ones_own(url: str) -> None:
    app = make_app(url)
    seen: list[str] = []

    @asynccontextmanager
    async def own(web: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app) as opened:
            assert opened is app
            app.tasks["asgi.note"].fire("starting")
            yield
            seen.append("before close")
            app.tasks["asgi.note"].fire("stopping")  # still stored: the App closes after

    async with serving(FastAPI(lifespan=own)):
        pass
    assert seen == ["before close"]
    assert await pending(url) == 2


async def test_middleware_serves_the_lifespan_of_an_app_that_has_none(url: str) -> None:
    app = make_app(url)

    async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"  # what an app without lifespan support does
        app.tasks["asgi.note"].fire(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with serving(LifespanMiddleware(bare, app)) as client:
        assert (await client.get("/hello")).status_code == 204
    assert await pending(url) == 1


async def test_middleware_opens_before_the_apps_startup_and_closes_after_its_shutdown(
    url: str,
) -> None:
    app = make_app(url)
    note = app.tasks["asgi.note"]

    @asynccontextmanager
    async def own(web: FastAPI) -> AsyncIterator[None]:
        await note.send("startup").sent()  # the App is open already
        yield
        note.fire("shutdown")  # batched: the App is closed after this, storing it

    async with serving(LifespanMiddleware(FastAPI(lifespan=own), app)):
        pass
    assert await pending(url) == 2


class Server:
    """The server's side of one lifespan, driven by hand: what the app sent, in order."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: Any) -> None:
        self.sent.append(dict(message))


async def test_middleware_fails_the_startup_when_the_app_cannot_open(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    app = make_app(f"sqlite:///{tmp_path / 'a-file' / 'pigeon.db'}")  # under a file: no
    started: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        started.append("inner")

    server = Server()
    server.inbox.put_nowait({"type": "lifespan.startup"})
    await LifespanMiddleware(inner, app)({"type": "lifespan"}, server.receive, server.send)
    assert [m["type"] for m in server.sent] == ["lifespan.startup.failed"]
    assert "pigeon could not open sqlite:///" in server.sent[0]["message"]
    assert started == []


def test_the_integration_imports_no_web_framework() -> None:
    script = (
        "import sys, pigeon, pigeon.integrations.asgi;"
        "print([m for m in ('fastapi', 'starlette', 'httpx', 'uvicorn') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    assert done.stdout.decode().strip() == "[]"
