"""A nats-server SIGKILLed and restarted under an open backend: its connection reconnects, the
view's ordered consumer resumes where it was, and everything stored before is still there
(calls made while the server is down fail with BackendError, and succeed again after)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pigeon.backends.nats import NatsBackend
from pigeon.errors import BackendError
from pigeon.message import Delivery, Message, new_id
from tests.nats_servers import NatsServer

T = TypeVar("T")

pytestmark = pytest.mark.slow


@pytest.fixture
def server(nats_binary: Path, tmp_path: Path) -> Iterator[NatsServer]:
    started = NatsServer(nats_binary, tmp_path / "restart")
    started.start()
    try:
        yield started
    finally:
        started.stop()


async def eventually(attempt: Callable[[], Awaitable[T]], within: float = 30.0) -> T:
    deadline = time.monotonic() + within
    while True:
        try:
            return await attempt()
        except BackendError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def test_the_backend_carries_on_after_its_server_restarts(server: NatsServer) -> None:
    backend = NatsBackend(f"{server.url}?stream=restart")
    await backend.open()
    try:
        sent = [Message(new_id(), "t", queue="q") for _ in range(10)]
        await backend.enqueue(sent[:5])
        server.kill()
        server.start()
        await eventually(lambda: backend.enqueue(sent[5:]))

        got: list[Delivery] = []
        while len(got) < len(sent):
            got += await eventually(lambda: backend.fetch(["q"], 10, "w", wait=1.0))
        assert sorted(d.id for d in got) == sorted(m.id for m in sent)
    finally:
        await backend.close()
