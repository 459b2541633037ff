"""The network between pigeon and its broker fails: every connection reset, all traffic
stalled. The sender and two real worker processes reach the broker through a TCP proxy
(``tcp_proxy.py``) that the test drives; nothing acknowledged may be lost, no outcome may be
doubled or stale, every worker keeps working, and everything drains.

A send that raises (its connection dropped) is sent again with the same message id, as a
careful caller would: the contract says an id already stored is not stored twice, so a send
that reached the store before its reply was lost must not run twice either. The run's notes
say how many sends raised, i.e. how many pigeon did not retry by itself.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import pigeon
from tests.chaos import chaos_app
from tests.chaos.harness import Awaiter, Crew, Sender, elapsed, report, settled, stored_twice
from tests.chaos.jepsen import History, check
from tests.chaos.tcp_proxy import TcpProxy
from tests.processes import Workers, eventually
from tests.servers import (
    BACKEND_URLS,
    DEFAULT_PORTS,
    cleanup,
    make_url,
    require_server,
    scheme_of,
)

TASKS = 1000
CONCURRENCY = 8
#: Faults, by the number of sends acknowledged when each is injected.
RESETS_AT = (150, 300, 600, 800)
STALL_AT = 450
STALL_SECONDS = 2.0


def server_urls() -> list[Any]:
    """The backends in tests/servers.py that talk to a server over TCP."""
    params = [pytest.param(u, id=scheme_of(u)) for u in BACKEND_URLS if urlsplit(u).hostname]
    wanted = os.environ.get("PIGEON_TEST_BACKENDS")
    redis_wanted = not wanted or "redis" in wanted.split(",")
    if redis_wanted and not any(scheme_of(u) == "redis" for u in BACKEND_URLS):
        reason = "redis:// is commented out of BACKEND_URLS in tests/servers.py"
        params.append(pytest.param("", id="redis", marks=pytest.mark.skip(reason=reason)))
    return params


@pytest.fixture(params=server_urls())
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url = make_url(request.param, tmp_path)
    require_server(url)
    yield url
    asyncio.run(cleanup(url))


@pytest.fixture
def proxy(server_url: str) -> Iterator[TcpProxy]:
    parts = urlsplit(server_url)
    assert parts.hostname is not None
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    with TcpProxy(parts.hostname, port, lifetime=120) as proxy:
        yield proxy


@pytest.fixture
def history(tmp_path: Path) -> Path:
    return tmp_path / "history.log"


@pytest.fixture
def app(proxy: TcpProxy, server_url: str) -> Iterator[pigeon.App]:
    app = chaos_app.register(pigeon.App(proxy.rewrite(server_url)))
    yield app
    app.close_sync()


@pytest.fixture
def crew(proxy: TcpProxy, server_url: str, history: Path, tmp_path: Path) -> Iterator[Crew]:
    env = {"PIGEON_CHAOS_LOG": str(history)}
    workers = Workers(proxy.rewrite(server_url), "tests.chaos.chaos_app:app", env)
    crew = Crew(workers, ("-c", str(CONCURRENCY), "--no-scheduler"), tmp_path)
    yield crew
    workers.stop_all()


def inject_faults(
    proxy: TcpProxy, sender: Sender, crew: Crew, done: list[str], over: threading.Event
) -> None:
    """Reset every connection at RESETS_AT sends, stall everything at STALL_AT, each while
    sends, fetches, settles and waits are in flight (until ``over``: sending has ended)."""
    plan = sorted([(at, "reset") for at in RESETS_AT] + [(STALL_AT, "stall")])
    for at, fault in plan:
        eventually(
            lambda at=at: len(sender.acknowledged) >= at or over.is_set(), f"{at} sends", 30, 0.001
        )
        if len(sender.acknowledged) < at:
            return  # sending ended early (the test is failing)
        if fault == "reset":
            done.append(f"reset {proxy.reset()} connections at send {at}")
        else:
            proxy.stall(STALL_SECONDS)
            done.append(f"stalled every connection {STALL_SECONDS:g}s at send {at}")
        crew.replace_dead()


def test_connection_resets_and_a_stall_lose_and_double_nothing(
    server_url: str, proxy: TcpProxy, app: pigeon.App, crew: Crew, history: Path
) -> None:
    started = time.monotonic()
    crew.start(2)
    eventually(
        lambda: len(app.backend_call_sync(lambda b: b.stats(), timeout=10).workers) == 2,
        "both workers to record a heartbeat",
        timeout=30,
        interval=0.1,
    )
    sender = Sender(app, "chaos.work")
    awaiter = Awaiter(app)
    faults: list[str] = []
    over = threading.Event()
    injector = threading.Thread(target=inject_faults, args=(proxy, sender, crew, faults, over))
    injector.start()
    rng = random.Random(11)
    try:
        for _ in range(TASKS):
            awaiter.add(sender.send(rng.randint(1, 20)))
    finally:
        over.set()
        injector.join(60)
    assert len(faults) == len(RESETS_AT) + 1, f"faults injected: {faults}"
    awaiter.finish(60)
    outcomes = settled(app, sender.acknowledged, 60, crew.replace_dead)
    crew.replace_dead()

    ran = History.read(history)
    verdict = check(sender.acknowledged, ran, outcomes, len(faults))
    scheme = scheme_of(server_url)
    notes = [
        *faults,
        *sender.notes(),
        f"proxy connections accepted: {proxy.accepted} (reconnections included)",
        f"worker deaths: {', '.join(crew.deaths) or 'none'}; run took {elapsed(started)}",
    ]
    report(verdict, f"{scheme}: 2 workers + sender through a TCP proxy, resets and a stall", notes)
    assert not sender.leaked, f"sends raised other than BackendError: {sender.leaked[:3]}"
    assert not awaiter.errors, f"promises that failed: {awaiter.errors[:5]}"
    assert len(awaiter.values) == TASKS
    assert verdict.ok == TASKS  # exactly one visible outcome each, all succeeded
    # At-least-once: only what a worker held when a fault hit may run twice.
    assert len(verdict.duplicated) <= len(faults) * 2 * CONCURRENCY
    assert not stored_twice(ran), f"stored again after settling: {stored_twice(ran)[:5]}"
    assert not crew.deaths, f"workers died: {crew.deaths}\n{crew.log_tail()}"
    stats = app.backend_call_sync(lambda b: b.stats(), timeout=10)
    assert stats.queues.get("default", pigeon.message.QueueStats()) == pigeon.message.QueueStats()
    assert stats.dead == 0
