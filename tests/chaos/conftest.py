"""What the fault-injection tests share: the history file, a proxy in front of the test's
server with an App and workers behind it, and the checker's tables printed at the end.

A module that uses ``proxy``, ``proxied_app`` or ``proxied_crew`` provides ``server_url``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import pigeon
from tests.chaos import chaos_app
from tests.chaos.harness import Crew
from tests.chaos.jepsen import TABLES
from tests.chaos.tcp_proxy import TcpProxy
from tests.processes import Workers
from tests.servers import DEFAULT_PORTS

#: Tasks each worker process behind a proxy runs at once.
PROXIED_CONCURRENCY = 8


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """The file every execution of a chaos task is recorded in."""
    return tmp_path / "history.log"


@pytest.fixture
def proxy(server_url: str) -> Iterator[TcpProxy]:
    """A loopback TCP proxy in front of the test's server."""
    parts = urlsplit(server_url)
    assert parts.hostname is not None
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    with TcpProxy(parts.hostname, port, lifetime=120) as proxy:
        yield proxy


@pytest.fixture
def proxied_app(proxy: TcpProxy, server_url: str) -> Iterator[pigeon.App]:
    """The sender's App, connected through the proxy."""
    app = chaos_app.register(pigeon.App(proxy.rewrite(server_url)))
    yield app
    app.close_sync()


@pytest.fixture
def proxied_crew(proxy: TcpProxy, server_url: str, history: Path, tmp_path: Path) -> Iterator[Crew]:
    """Worker processes connected through the proxy."""
    env = {"PIGEON_CHAOS_LOG": str(history)}
    workers = Workers(proxy.rewrite(server_url), "tests.chaos.chaos_app:app", env)
    crew = Crew(workers, ("-c", str(PROXIED_CONCURRENCY), "--no-scheduler"), tmp_path)
    yield crew
    workers.stop_all()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TABLES:
        terminalreporter.section("fault injection: Jepsen-style checks")
        for table in TABLES:
            terminalreporter.write_line(table)
            terminalreporter.write_line("")
