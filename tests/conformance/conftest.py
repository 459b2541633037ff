"""The backends the conformance suite runs on, and the ``backend`` fixture every test takes.

Adding a backend is one line in ``BACKEND_URLS`` (``tests/servers.py``, shared with the other
suites): a URL template that ``make_url`` turns into a URL no other test uses. Server backends
that cannot be reached are skipped with a one-line reason, except under ``CI=true``, where an
unreachable server fails the run.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from pigeon.backends import Backend, from_url
from tests.nats_servers import NatsServer, require_binary
from tests.servers import (
    BACKEND_URLS,
    cleanup,
    make_url,
    require_server,
    scheme_of,
    shares_across_processes,
)


@pytest.fixture(scope="session", autouse=True)
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A private nats-server 2.12+ for the session when the suite runs on ``nats://``
    (never the machine's shared one, which is too old), named in PIGEON_TEST_NATS."""
    if not any(scheme_of(u) == "nats" for u in BACKEND_URLS):
        yield
        return
    server = NatsServer(require_binary(), tmp_path_factory.mktemp("nats"))
    server.start()
    os.environ["PIGEON_TEST_NATS"] = f"127.0.0.1:{server.port}"
    try:
        yield
    finally:
        os.environ.pop("PIGEON_TEST_NATS", None)
        server.stop()


@pytest.fixture(params=BACKEND_URLS, ids=scheme_of)
def backend_template(request: pytest.FixtureRequest) -> str:
    template: str = request.param
    return template


@pytest.fixture
def url_factory(backend_template: str, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes as many fresh URLs of this backend as a test needs (one per hypothesis example)."""

    made: list[str] = []

    def fresh() -> str:
        url = make_url(backend_template, Path(tempfile.mkdtemp(dir=tmp_path)))
        require_server(url)
        made.append(url)
        return url

    yield fresh
    for url in made:
        asyncio.run(cleanup(url))


@pytest.fixture
async def backend_url(backend_template: str, tmp_path: Path) -> AsyncIterator[str]:
    """A URL for this test only; what the test stored on a shared server is removed after."""
    url = make_url(backend_template, tmp_path)
    require_server(url)
    yield url
    await cleanup(url)


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
