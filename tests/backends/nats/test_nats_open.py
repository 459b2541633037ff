"""Opening the NATS backend's stream: what is checked and created before anything is stored.

Against the session's private nats-server 2.15, a second one with JetStream off, and a fake
server that claims an old version in its INFO (the machine's shared 2.9 server is never used).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from pigeon.backends.nats.connections import open_stream, parse_url, redact_url
from pigeon.errors import BackendError, ConfigError
from tests.nats_servers import NatsServer, free_ports


async def open_url(url: str, connect_for: float = 10.0) -> None:
    """Open the stream a URL names and close the connection again."""
    opened = await open_stream(parse_url(url), redact_url(url), connect_for)
    await opened.nc.close()


async def test_first_open_creates_the_stream_with_the_settings_records_need(
    nats_url: str, stream_name: str
) -> None:
    opened = await open_stream(parse_url(nats_url), redact_url(nats_url))
    try:
        info = await opened.js.stream_info(stream_name)
    finally:
        await opened.nc.close()
    config = info.config
    assert config.subjects == [f"{stream_name}.>"]
    assert config.max_msgs_per_subject == 1
    assert config.allow_atomic is True
    assert config.allow_msg_ttl is True
    assert config.num_replicas == 1
    assert config.retention == "limits"  # nats-py leaves the server's string as it is


async def test_a_second_open_accepts_the_stream_the_first_created(
    nats_url: str, stream_name: str, nc: NATS
) -> None:
    await open_url(nats_url)
    before = await nc.jetstream().stream_info(stream_name)
    await open_url(nats_url)
    after = await nc.jetstream().stream_info(stream_name)
    assert after.created == before.created


async def test_opens_that_race_to_create_the_stream_all_succeed(nats_url: str) -> None:
    await asyncio.gather(*(open_url(nats_url) for _ in range(4)))


async def test_an_existing_stream_with_conflicting_settings_is_refused_naming_each(
    nats_url: str, stream_name: str, nc: NATS
) -> None:
    await nc.jetstream().add_stream(
        name=stream_name, subjects=[f"{stream_name}.>"], max_msgs_per_subject=5
    )
    with pytest.raises(ConfigError) as raised:
        await open_url(nats_url)
    message = str(raised.value)
    assert f"NATS stream {stream_name!r}" in message
    assert "max_msgs_per_subject is 5 (needs 1)" in message
    assert "allow_atomic is False (needs True)" in message
    assert "allow_msg_ttl is False (needs True)" in message
    assert "\n" not in message


async def test_more_replicas_than_the_server_can_hold_is_refused_at_create(
    nats_url: str,
) -> None:
    with pytest.raises(ConfigError) as raised:
        await open_url(f"{nats_url}&replicas=3")
    assert "cannot create NATS stream" in str(raised.value)
    assert "JetStream error" in str(raised.value)


@pytest.fixture(scope="module")
def server_without_jetstream(
    nats_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NatsServer]:
    server = NatsServer(nats_binary, tmp_path_factory.mktemp("nats-nojs"), jetstream=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_server_with_jetstream_off_is_refused_in_one_line(
    server_without_jetstream: NatsServer,
) -> None:
    with pytest.raises(ConfigError) as raised:
        await open_url(f"{server_without_jetstream.url}?stream=s")
    message = str(raised.value)
    assert f"nats-server at {server_without_jetstream.url}?stream=s has JetStream off" in message
    assert "\n" not in message


@pytest.fixture
async def old_server() -> AsyncIterator[str]:
    """A fake server that speaks just enough of the protocol to be connected to (INFO,
    then PONG for every PING) and says it is nats-server 2.11.4."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = {"server_id": "FAKE", "version": "2.11.4", "proto": 1, "headers": True,
                "max_payload": 1 << 20, "jetstream": True}  # fmt: skip
        writer.write(b"INFO " + json.dumps(info).encode() + b"\r\n")
        while line := await reader.readline():
            if line.startswith(b"PING"):
                writer.write(b"PONG\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"nats://127.0.0.1:{port}"


async def test_a_server_older_than_2_12_is_refused_naming_both_versions(old_server: str) -> None:
    with pytest.raises(ConfigError) as raised:
        await open_url(old_server)
    message = str(raised.value)
    assert message == (
        f"nats-server at {old_server} is version 2.11.4; pigeon's NATS backend needs "
        "nats-server 2.12.0 or later (atomic batch publish)"
    )


async def test_an_unreachable_server_is_a_backend_error_after_the_connect_window() -> None:
    (port,) = free_ports(1)
    url = f"nats://user:hunter2@127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(BackendError) as raised:
        await open_url(url, connect_for=1.0)
    assert time.monotonic() - started < 5
    assert "cannot reach nats-server at nats://user:***@127.0.0.1" in str(raised.value)
    assert "hunter2" not in str(raised.value)
