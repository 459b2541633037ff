"""Reaching one Redis server: the URL read into redis-py's URL and the key prefix, and the
connections one event loop uses (commands and scripts, and the subscriber)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio.connection import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pigeon.backends.base import redact
from pigeon.backends.redis.client import Client
from pigeon.backends.redis.listener import Listener
from pigeon.errors import ConfigError

DEFAULT_PREFIX = "pigeon"


def parse_url(url: str) -> tuple[str, str]:
    """(the URL redis-py is given, the key prefix). Raises ConfigError."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("redis", "rediss"):
        raise ConfigError(f"not a Redis URL: {redact(url)!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    rest: list[tuple[str, str]] = []
    for name, value in query:
        if name == "prefix":
            prefix = value
        else:
            rest.append((name, value))
    if not prefix or "{" in prefix or "}" in prefix:
        raise ConfigError(
            f"Redis URL {redact(url)!r}: the prefix must be a non-empty name without braces "
            f"(it becomes the hash tag {{prefix}}), not {prefix!r}"
        )
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix


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


def connect(client_url: str, url: str, base: str, done_channel: bytes) -> Connections:
    """The connections of the running event loop to ``client_url`` (from ``parse_url``);
    ``url`` is the redacted URL errors name, ``base`` the key base ``{prefix}:`` and
    ``done_channel`` the channel settles are published on. Nothing connects before use."""
    pool = ConnectionPool.from_url(
        client_url,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),  # retries are the Client's, on new connections
    )
    return Connections(Client(pool, url, base), Listener(pool, done_channel, url))
