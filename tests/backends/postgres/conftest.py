"""PostgreSQL-only behaviour: migrations, transactional enqueue, the listener, bloat.

The Backend contract itself is checked by ``tests/conformance/`` on every backend; these
tests cover what only the PostgreSQL backend offers. Each test gets a schema of its own
(the PostgreSQL URL of ``tests/servers.py``), dropped afterwards. They are skipped when
PostgreSQL is not among the backends under test, and when its server does not answer
(failed under ``CI=true``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pigeon.backends.postgres import PostgresBackend
from tests.servers import BACKEND_URLS, cleanup, make_url, require_server, scheme_of

TEMPLATES = [u for u in BACKEND_URLS if scheme_of(u) in ("postgresql", "postgres")]


@pytest.fixture
async def pg_url(tmp_path: Path) -> AsyncIterator[str]:
    """A URL naming a schema of this test's own (not created yet)."""
    if not TEMPLATES:
        pytest.skip("postgresql is not among the backends under test")
    url = make_url(TEMPLATES[0], tmp_path)
    require_server(url)
    yield url
    await cleanup(url)


@pytest.fixture
async def backend(pg_url: str) -> AsyncIterator[PostgresBackend]:
    opened = PostgresBackend(pg_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def server_dsn(url: str) -> str:
    """The URL without pigeon's query parameters, for a plain asyncpg connection."""
    return url.split("?", 1)[0]


def schema_of(url: str) -> str:
    return url.split("schema=", 1)[1].split("&", 1)[0]
