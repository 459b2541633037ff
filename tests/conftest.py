"""Fixtures every suite may use."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import (
    BACKEND_URLS,
    cleanup,
    make_url,
    require_server,
    scheme_of,
    shares_across_processes,
)


@pytest.fixture(params=[u for u in BACKEND_URLS if shares_across_processes(u)], ids=scheme_of)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of each backend that worker processes can share, a store of the test's own;
    what the test stored on a shared server is removed after it."""
    url = make_url(request.param, tmp_path)
    require_server(url)
    yield url
    asyncio.run(cleanup(url))
