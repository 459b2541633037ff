"""The backends every suite runs on, and how each test gets a store of its own.

One list, ``BACKEND_URLS``, names them; ``make_url`` turns a template into a URL that no other
test (and no other run) shares: a file in the test's own directory for SQLite, a key prefix
for Redis, a schema for PostgreSQL. ``cleanup`` removes what a test left on a shared server.
A server that does not answer skips its tests with a one-line reason, except under
``CI=true``, where it fails them.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from pigeon.backends import redact

#: Placeholders: ``{tmp_path}`` a directory private to the test, ``{run}`` an id shared by
#: one pytest run, ``{test}`` an id unique to the URL.
BACKEND_URLS: list[str] = [
    "memory://",
    "sqlite:///{tmp_path}/pigeon.db",
    "redis://127.0.0.1:6379/0?prefix=pigeon-test-{run}-{test}",
    "postgresql://postgres@127.0.0.1:5432/test?schema=pigeon_test_{run}_{test}",
]

#: The NATS backend runs only when PIGEON_TEST_BACKENDS names it, against a private
#: nats-server that the conformance conftest starts and names in PIGEON_TEST_NATS
#: (host:port); each test gets a stream of its own. (Not in the default list until every
#: suite that reads it starts that server; without one, its tests skip as unreachable:
#: never the machine's shared NATS, which is too old.)
NATS_URL = "nats://{nats}?stream=pigeon-test-{run}-{test}"

if os.environ.get("PIGEON_TEST_BACKENDS"):
    # e.g. PIGEON_TEST_BACKENDS=sqlite,redis: run the suites on those backends only
    _wanted = set(os.environ["PIGEON_TEST_BACKENDS"].split(","))
    BACKEND_URLS = [u for u in [*BACKEND_URLS, NATS_URL] if u.split("://", 1)[0] in _wanted]

#: Schemes whose store lives inside one backend object (not shared across processes).
PROCESS_LOCAL_SCHEMES = frozenset({"memory"})

DEFAULT_PORTS = {
    "redis": 6379,
    "rediss": 6379,
    "postgres": 5432,
    "postgresql": 5432,
    "nats": 4222,
    "amqp": 5672,
    "amqps": 5671,
}

RUN_ID = uuid.uuid4().hex[:8]


def scheme_of(template: str) -> str:
    return template.split("://", 1)[0]


def make_url(template: str, tmp_path: Path) -> str:
    """A URL for one test (or one hypothesis example) that shares no state with any other."""
    return template.format(
        tmp_path=tmp_path.as_posix(),
        run=RUN_ID,
        test=uuid.uuid4().hex[:12],
        nats=os.environ.get("PIGEON_TEST_NATS", "no-private-nats-server.invalid:4222"),
    )


def require_server(url: str) -> None:
    """Skip (fail under ``CI=true``) when the server a URL names does not answer."""
    parts = urlsplit(url)
    if not parts.hostname:
        return  # embedded: nothing to reach
    port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    if port is None:
        return
    try:
        socket.create_connection((parts.hostname, port), timeout=1.0).close()
    except OSError as exc:
        reason = f"{redact(url)} unreachable: {exc}"
        if os.environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail(reason)
        pytest.skip(reason)


def shares_across_processes(url: str) -> bool:
    return scheme_of(url) not in PROCESS_LOCAL_SCHEMES


async def cleanup(url: str) -> None:
    """Remove everything a test stored on a shared server under its URL's prefix/schema."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if parts.scheme in {"redis", "rediss"}:
        import redis.asyncio as aioredis

        prefix = query["prefix"][0]
        client = aioredis.Redis.from_url(url.split("?", 1)[0])
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            # keys of one queue share a hash tag: {prefix...}, so match the braced form too
            keys += [key async for key in client.scan_iter(match=f"{{{prefix}*", count=1000)]
            for i in range(0, len(keys), 500):
                await client.delete(*keys[i : i + 500])
        finally:
            await client.aclose()
    elif parts.scheme in {"nats", "tls"}:
        import nats
        from nats.js.errors import NotFoundError

        client = await nats.connect(f"nats://{parts.netloc}", allow_reconnect=False)
        try:
            await client.jetstream().delete_stream(query["stream"][0])
        except NotFoundError:
            pass
        finally:
            await client.close()
    elif parts.scheme in {"postgres", "postgresql"}:
        import asyncpg

        schema = query["schema"][0]
        conn = await asyncpg.connect(url.split("?", 1)[0])
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
