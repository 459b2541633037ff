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
from tests.chaos.conftest import PROXIED_CONCURRENCY
from tests.chaos.harness import Awaiter, Crew, Sender, elapsed, report, settled, stored_twice
from tests.chaos.jepsen import History, check
from tests.chaos.tcp_proxy import TcpProxy
from tests.processes import eventually
from tests.servers import (
    BACKEND_URLS,
    cleanup,
    make_url,
    require_server,
    scheme_of,
)

TASKS = 1000
CONCURRENCY = PROXIED_CONCURRENCY
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
    server_url: str, proxy: TcpProxy, proxied_app: pigeon.App, proxied_crew: Crew, history: Path
) -> None:
    started = time.monotonic()
    proxied_crew.start(2)
    eventually(
        lambda: len(proxied_app.backend_call_sync(lambda b: b.stats(), timeout=10).workers) == 2,
        "both workers to record a heartbeat",
        timeout=30,
        interval=0.1,
    )
    sender = Sender(proxied_app, "chaos.work")
    awaiter = Awaiter(proxied_app)
    faults: list[str] = []
    over = threading.Event()
    injector = threading.Thread(
        target=inject_faults, args=(proxy, sender, proxied_crew, faults, over)
    )
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
    outcomes = settled(proxied_app, sender.acknowledged, 60, proxied_crew.replace_dead)
    proxied_crew.replace_dead()

    ran = History.read(history)
    verdict = check(sender.acknowledged, ran, outcomes, len(faults))
    scheme = scheme_of(server_url)
    notes = [
        *faults,
        *sender.notes(),
        f"proxy connections accepted: {proxy.accepted} (reconnections included)",
        f"worker deaths: {', '.join(proxied_crew.deaths) or 'none'}; run took {elapsed(started)}",
    ]
    report(verdict, f"{scheme}: 2 workers + sender through a TCP proxy, resets and a stall", notes)
    assert not sender.leaked, f"sends raised other than BackendError: {sender.leaked[:3]}"
    assert not awaiter.errors, f"promises that failed: {awaiter.errors[:5]}"
    assert len(awaiter.values) == TASKS
    assert verdict.ok == TASKS  # exactly one visible outcome each, all succeeded
    # At-least-once: only what a worker held when a fault hit may run twice.
    assert len(verdict.duplicated) <= len(faults) * 2 * CONCURRENCY
    assert not stored_twice(ran), f"stored again after settling: {stored_twice(ran)[:5]}"
    assert not proxied_crew.deaths, (
        f"workers died: {proxied_crew.deaths}\n{proxied_crew.log_tail()}"
    )
    stats = proxied_app.backend_call_sync(lambda b: b.stats(), timeout=10)
    assert stats.queues.get("default", pigeon.message.QueueStats()) == pigeon.message.QueueStats()
    assert stats.dead == 0
