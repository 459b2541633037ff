"""A nats-server SIGKILLed and restarted under an open backend: its connection reconnects, the
view's ordered consumer resumes where it was, and everything stored before is still there
(calls made while the server is down fail with BackendError, and succeed again after)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.backends.nats import NatsBackend
from pigeon.errors import BackendError
from pigeon.message import Delivery, Message, new_id
from tests.backends.nats.retrying import eventually
from tests.nats_servers import NatsServer

pytestmark = pytest.mark.slow


@pytest.fixture
def server(nats_binary: Path, tmp_path: Path) -> Iterator[NatsServer]:
    started = NatsServer(nats_binary, tmp_path / "restart")
    started.start()
    try:
        yield started
    finally:
        started.stop()


async def test_the_backend_carries_on_after_its_server_restarts(server: NatsServer) -> None:
    backend = NatsBackend(f"{server.url}?stream=restart")
    await backend.open()
    try:
        sent = [Message(new_id(), "t", queue="q") for _ in range(10)]
        await backend.enqueue(sent[:5])
        server.kill()
        server.start()
        await eventually(lambda: backend.enqueue(sent[5:]), errors=(BackendError,))

        got: list[Delivery] = []
        while len(got) < len(sent):
            got += await eventually(
                lambda: backend.fetch(["q"], 10, "w", wait=1.0), errors=(BackendError,)
            )
        assert sorted(d.id for d in got) == sorted(m.id for m in sent)
    finally:
        await backend.close()
