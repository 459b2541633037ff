"""Reaching one Redis server: the URL read into redis-py's URL, the key prefix and the retry
window, and the connections one event loop uses (commands and scripts, and the subscriber)."""

from __future__ import annotations

import math
from typing import NamedTuple

from redis.asyncio.connection import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pigeon.backends.base import read_url, redact
from pigeon.backends.redis.client import RETRY_FOR, Client
from pigeon.backends.redis.listener import Listener
from pigeon.errors import ConfigError

DEFAULT_PREFIX = "pigeon"


class Target(NamedTuple):
    """What a ``redis://`` URL says, read by ``parse_url``."""

    client_url: str
    """The URL redis-py is given: pigeon's own query parameters taken out."""
    prefix: str
    """The key prefix (``?prefix=``): every key starts with ``{prefix}:``."""
    retry_for: float
    """Seconds a call keeps retrying while the server is unreachable (``?retry_for=``)."""


def parse_url(url: str) -> Target:
    """Read pigeon's query parameters (``prefix``, ``retry_for``) out of a Redis URL; the
    others are redis-py's. Raises ConfigError."""
    given = read_url(url, ("redis", "rediss"), "Redis", ("prefix", "retry_for"))
    prefix = given.own.get("prefix", DEFAULT_PREFIX)
    retry_for = RETRY_FOR
    if "retry_for" in given.own:
        retry_for = check_retry_for(given.own["retry_for"], f"Redis URL {redact(url)!r}")
    if not prefix or "{" in prefix or "}" in prefix:
        raise ConfigError(
            f"Redis URL {redact(url)!r}: the prefix must be a non-empty name without braces "
            f"(it becomes the hash tag {{prefix}}), not {prefix!r}"
        )
    return Target(given.rest, prefix, retry_for)


def check_retry_for(value: str | float, where: str) -> float:
    """``value`` as a retry window in seconds, from 0 (no retry) to ``RETRY_FOR``: a script's
    reply is kept for a retry of its call only that long (``client.REPLY_TTL``), so a longer
    window could run a script twice. Raises ConfigError."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not 0 <= seconds <= RETRY_FOR:
        raise ConfigError(
            f"{where}: retry_for must be a number of seconds from 0 to {RETRY_FOR:g}, not {value!r}"
        )
    return seconds


class Connections:
    """What one event loop uses: commands and scripts, and the subscriber connection."""

    def __init__(self, client: Client, listener: Listener) -> None:
        self.client = client
        self.listener = listener
        self.loop = client.loop

    async def close(self) -> None:
        """Close the subscriber, the client's connections, then their pool."""
        await self.listener.close()
        await self.client.close()
        await self.client.pool.aclose()


def connect(
    client_url: str, url: str, base: str, done_channel: bytes, retry_for: float = RETRY_FOR
) -> Connections:
    """The connections of the running event loop to ``client_url`` (from ``parse_url``);
    ``url`` is the redacted URL errors name, ``base`` the key base ``{prefix}:``,
    ``done_channel`` the channel settles are published on and ``retry_for`` the client's
    retry window. Nothing connects before use."""
    pool = ConnectionPool.from_url(
        client_url,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),  # retries are the Client's, on new connections
    )
    return Connections(Client(pool, url, base, retry_for), Listener(pool, done_channel, url))
