"""The backends the conformance suite runs on, and the ``backend`` fixture every test takes.

Adding a backend is one line in ``BACKEND_URLS``: a URL template that ``make_url`` turns into
a URL no other test uses. Server backends that cannot be reached are skipped with a one-line
reason, except under ``CI=true``, where an unreachable server fails the run.
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pigeon.backends import Backend, from_url, redact

#: One template per backend. Placeholders: ``{tmp_path}`` a directory private to the test,
#: ``{run}`` an id shared by one pytest run, ``{test}`` an id unique to the test.
BACKEND_URLS: list[str] = [
    "memory://",
    "sqlite:///{tmp_path}/pigeon.db",
    # "redis://localhost:6379/15?prefix=pigeon-{run}-{test}",
    # "postgresql://localhost/pigeon_test?schema=pigeon_{run}_{test}",
]

#: Schemes whose store lives inside one backend object: a second connection or a second
#: process cannot see it, so the tests that need one skip.
PROCESS_LOCAL_SCHEMES = frozenset({"memory"})

#: Where to knock when a server URL names no port.
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
    return template.format(tmp_path=tmp_path.as_posix(), run=RUN_ID, test=uuid.uuid4().hex[:12])


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


@pytest.fixture(params=BACKEND_URLS, ids=scheme_of)
def backend_template(request: pytest.FixtureRequest) -> str:
    template: str = request.param
    return template


@pytest.fixture
def url_factory(backend_template: str, tmp_path: Path) -> Callable[[], str]:
    """Makes as many fresh URLs of this backend as a test needs (one per hypothesis example)."""

    def fresh() -> str:
        url = make_url(backend_template, Path(tempfile.mkdtemp(dir=tmp_path)))
        require_server(url)
        return url

    return fresh


@pytest.fixture
def backend_url(backend_template: str, tmp_path: Path) -> str:
    url = make_url(backend_template, tmp_path)
    require_server(url)
    return url


@pytest.fixture
def cross_process_url(backend_url: str) -> str:
    """The test's URL, for backends another process can open; skips for the others."""
    if not shares_across_processes(backend_url):
        pytest.skip(f"{scheme_of(backend_url)}:// is local to one process")
    return backend_url


@pytest.fixture
async def backend(backend_url: str) -> AsyncIterator[Backend]:
    opened = from_url(backend_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def second_connection(backend: Backend, backend_url: str) -> AsyncIterator[Backend]:
    """Another backend object on the same store, as another process would open it."""
    if not shares_across_processes(backend_url):
        pytest.skip(f"{scheme_of(backend_url)}:// is local to one backend object")
    other = from_url(backend_url)
    await other.open()
    try:
        yield other
    finally:
        await other.close()
