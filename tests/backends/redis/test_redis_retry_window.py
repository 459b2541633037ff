"""How long a Redis call keeps retrying an unreachable server: ``retry_for``, 30 s unless the
URL's ``retry_for`` (or the backend's attribute, which the CLI lowers) says less.

No server needed: the calls go to a local port nothing listens on.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest
from redis.asyncio.connection import ConnectionPool

from pigeon.backends import from_url
from pigeon.backends.base import RetryingBackend
from pigeon.backends.redis import client as redis_client
from pigeon.backends.redis.client import RETRY_FOR, Client
from pigeon.backends.redis.connections import parse_url
from pigeon.errors import BackendError, ConfigError


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def test_the_url_sets_the_retry_window_and_redis_py_never_sees_it() -> None:
    default = parse_url("redis://h:6379/0?prefix=app")
    assert default.retry_for == RETRY_FOR == 30.0

    target = parse_url("redis://h:6379/0?prefix=app&retry_for=2.5&socket_timeout=1")
    assert target.retry_for == 2.5
    assert target.prefix == "app"
    assert target.client_url == "redis://h:6379/0?socket_timeout=1"


@pytest.mark.parametrize("value", ["-1", "31", "soon", "nan", "inf", ""])
def test_a_retry_window_outside_0_to_30_seconds_is_a_config_error(value: str) -> None:
    # Past 30 s a retried script could run twice: its reply is kept only that long.
    with pytest.raises(ConfigError, match="retry_for must be a number of seconds from 0 to 30"):
        parse_url(f"redis://:pw@h/0?retry_for={value}")


def test_the_backend_is_a_retrying_backend_whose_window_can_be_lowered() -> None:
    backend = from_url("redis://127.0.0.1:6379/0?retry_for=10")
    assert isinstance(backend, RetryingBackend)
    assert backend.retry_for == 10.0

    backend.retry_for = 2.0
    assert backend.retry_for == 2.0
    with pytest.raises(ConfigError, match="retry_for"):
        backend.retry_for = 60.0
    assert not isinstance(from_url("memory://"), RetryingBackend)


async def test_a_short_window_gives_up_in_time_naming_the_cause_without_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = closed_url()
    client = Client(ConnectionPool.from_url(url), url, "{t}:", retry_for=0.3)
    started = time.monotonic()
    try:
        with (
            caplog.at_level(logging.DEBUG, logger="pigeon.backends.redis"),
            pytest.raises(BackendError, match=r"unreachable for 0\.3s: .*Connect call failed"),
        ):
            await client.execute(b"PING")
    finally:
        await client.close()
    assert time.monotonic() - started < 2.0
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert retries, "retried, at DEBUG"
    assert all(r.levelno == logging.DEBUG for r in retries)


async def test_a_long_window_warns_of_each_retry(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker's calls (30 s) stall it for a while: each retry is a warning that says why.
    monkeypatch.setattr(redis_client, "QUIET_RETRY_FOR", 0.1)
    url = closed_url()
    client = Client(ConnectionPool.from_url(url), url, "{t}:", retry_for=0.3)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="pigeon.backends.redis"),
            pytest.raises(BackendError, match="unreachable"),
        ):
            await client.execute(b"PING")
    finally:
        await client.close()
    assert [r for r in caplog.records if "retrying" in r.getMessage()]
