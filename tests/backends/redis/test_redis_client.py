"""The Redis backend's ``Client`` on the shared server: its own reading of replies (``_Wire``)
and its watchdog, which times calls without a timer per call.

Only the test's own connections are cut off (``CLIENT KILL ID``); keys live under the test's
own prefix and are removed after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import hiredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import ConnectionPool

from pigeon.backends.redis.client import Client, TakenOver
from pigeon.errors import BackendError
from tests.servers import cleanup, make_url, require_server

TEMPLATE = "redis://127.0.0.1:6379/0?prefix=pigeon-test-{run}-{test}"


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    url = make_url(TEMPLATE, tmp_path)
    require_server(url)
    yield url
    await cleanup(url)


def client_for(url: str) -> Client:
    server, _, query = url.partition("?")
    return Client(ConnectionPool.from_url(server), server, "{" + query.split("=", 1)[1] + "}:")


async def test_concurrent_calls_each_get_their_own_reply(url: str) -> None:
    client = client_for(url)
    try:
        replies = await asyncio.gather(*(client.execute(b"ECHO", f"v{i}") for i in range(300)))
        assert replies == [f"v{i}".encode() for i in range(300)]
    finally:
        await client.close()


async def test_an_error_reply_fails_its_call_only_and_the_connection_is_used_again(
    url: str,
) -> None:
    client = client_for(url)
    try:
        first = await client.execute(b"CLIENT", b"ID")
        with pytest.raises(BackendError, match="unknown command"):
            await client.execute(b"NO-SUCH-COMMAND")
        assert await client.execute(b"CLIENT", b"ID") == first
    finally:
        await client.close()


async def test_a_connection_the_server_closed_while_idle_is_not_used_again(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(url)
    admin = aioredis.Redis.from_url(url.partition("?")[0])
    try:
        killed = await client.execute(b"CLIENT", b"ID")
        assert await admin.execute_command("CLIENT", "KILL", "ID", killed) == 1
        async with asyncio.timeout(5):  # the close reaches the idle connection
            while client._idle[-1].lost is None:
                await asyncio.sleep(0.005)
        with caplog.at_level(logging.WARNING, logger="pigeon.backends.redis"):
            other = await client.execute(b"CLIENT", b"ID")
        assert other != killed
        assert not [r for r in caplog.records if "retrying" in r.getMessage()]
    finally:
        await admin.aclose()
        await client.close()


async def test_a_pipeline_bigger_than_the_write_buffer_gets_every_reply(url: str) -> None:
    client = client_for(url)
    try:
        value = b"x" * 1000
        key = url.split("=", 1)[1].encode() + b":big"
        commands = (hiredis.pack_command((b"RPUSH", key, value)) for _ in range(2000))
        replies = await client._pipeline(commands)  # ~2 MB written before any reply is read
        assert replies == list(range(1, 2001))
    finally:
        await client.close()


async def test_a_call_whose_reply_does_not_come_fails_with_timeout_in_time(url: str) -> None:
    # No retry here (_once is one try): the watchdog must cut it off near the URL's
    # socket_timeout, drop the connection, and leave the client usable.
    server = url.partition("?")[0]
    client = Client(
        ConnectionPool.from_url(server + "?socket_timeout=0.2"), server, "{pigeon-test}:"
    )
    try:
        key = url.split("=", 1)[1].encode() + b":never"
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client._once(hiredis.pack_command((b"BLPOP", key, b"5")))
        took = time.monotonic() - started
        assert 0.15 < took < 1.5, took
        assert await client.execute(b"PING") == b"PONG"
    finally:
        await client.close()


async def test_a_url_asking_for_resp3_still_gets_plain_resp2_replies(url: str) -> None:
    # _Wire matches replies to calls in order; RESP3 could slip pushes in between.
    server = url.partition("?")[0]
    client = Client(ConnectionPool.from_url(server + "?protocol=3"), server, "{pigeon-test}:")
    try:
        hello = await client.execute(b"HELLO")
        assert isinstance(hello, list)  # RESP3 would answer with a map
        assert dict(zip(hello[::2], hello[1::2], strict=True))[b"proto"] == 2
    finally:
        await client.close()


def test_a_taken_over_connection_must_say_what_to_do_with_replies_and_a_loss() -> None:
    class Incomplete(TakenOver):
        def on_reply(self, reply: object) -> None:
            pass

    with pytest.raises(TypeError, match="on_lost"):
        Incomplete(None, hiredis.Reader())  # type: ignore[abstract,arg-type]
