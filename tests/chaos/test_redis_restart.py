"""The Redis server crashes and restarts, or drops every client connection, while 2,000 tasks
run through a real worker process: no accepted task is lost, and each promise resolves once.

Each test runs its own ``redis-server`` (a free port, a temporary directory, append-only file
with ``appendfsync always``: the setting under which the docs promise that nothing accepted is
lost), so crashing it or killing its clients disturbs nobody else. The server is stopped
whatever the outcome of the test.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pigeon
from pigeon.backends import from_url
from pigeon.backends.redis import listener as redis_listener
from tests.chaos import chaos_app
from tests.chaos.jepsen import TABLES, History, check
from tests.chaos.redis_server import RedisServer, private_redis
from tests.conformance.messages import QUEUE, make_messages, succeeded
from tests.processes import Workers

TASKS = 2000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with private_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def app(server: RedisServer) -> Iterator[pigeon.App]:
    app = chaos_app.register(pigeon.App(server.url))
    yield app
    app.close_sync()


@pytest.fixture
def workers(server: RedisServer, history: Path) -> Iterator[Workers]:
    w = Workers(server.url, "tests.chaos.chaos_app:app", {"PIGEON_CHAOS_LOG": str(history)})
    yield w
    w.stop_all()


def run_with_faults(
    app: pigeon.App, workers: Workers, history: Path, faults: dict[int, Callable[[], Any]]
) -> tuple[list[Any], History]:
    """Send TASKS tasks from this process (each acknowledged once stored) to a worker
    process, starting ``faults[i]`` in a thread of its own just after send ``i``, while
    another thread awaits each promise in turn (so waits span the faults too). Returns the
    promises and what the worker ran."""
    worker = workers.start("-c", "50")
    keyed = app.tasks["chaos.keyed"]
    promises: list[Any] = []
    sent: queue.Queue[Any] = queue.Queue()
    values: list[Any] = []

    def await_each() -> None:
        for _ in range(TASKS):
            values.append(sent.get(timeout=60).result(timeout=60))

    waiter = threading.Thread(target=await_each)
    waiter.start()
    threads = [waiter]
    try:
        for i in range(TASKS):
            promise = keyed.send(i)  # returns once the message is stored
            promises.append(promise)
            sent.put(promise)
            if i in faults:
                thread = threading.Thread(target=faults[i])
                thread.start()
                threads.append(thread)
    finally:
        for thread in threads:
            thread.join(90)
    assert [v["n"] for v in values] == list(range(TASKS)), "a promise did not resolve"
    assert worker.poll() is None, "the worker died instead of reconnecting"
    return promises, History.read(history)


def assert_nothing_lost(
    app: pigeon.App, promises: list[Any], history: History, faults: int, title: str
) -> None:
    sent = [p.id for p in promises]
    outcomes = app.backend_call_sync(lambda b: b.results(sent))
    verdict = check(sent, history, outcomes, faults)
    TABLES.append(verdict.table(title))
    assert not verdict.lost, f"lost: {verdict.lost[:5]}"
    assert not verdict.unexpected, f"unexpected: {verdict.unexpected[:5]}"
    assert not verdict.stale, f"stale outcomes: {verdict.stale[:5]}"
    assert verdict.ok == TASKS
    stats = app.backend_call_sync(lambda b: b.stats())
    assert stats.queues.get("default", pigeon.message.QueueStats()) == pigeon.message.QueueStats()
    assert stats.dead == 0


def test_server_crash_and_restart_mid_run_loses_no_accepted_task(
    server: RedisServer, app: pigeon.App, workers: Workers, history: Path
) -> None:
    def crash_and_restart() -> None:
        server.crash()
        time.sleep(0.5)  # down for a while: sends and the worker's calls must wait it out
        server.start()

    promises, ran = run_with_faults(
        app, workers, history, {600: crash_and_restart, 1400: crash_and_restart}
    )

    assert_nothing_lost(app, promises, ran, 2, "redis: server crashed and restarted twice")


def test_every_client_connection_dropped_mid_run_loses_no_accepted_task(
    server: RedisServer, app: pigeon.App, workers: Workers, history: Path
) -> None:
    def drop_every_connection() -> None:
        with server.control() as control:
            control.execute_command("CLIENT", "KILL", "TYPE", "normal")
            control.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

    faults = dict.fromkeys((300, 800, 1300, 1800), drop_every_connection)
    promises, ran = run_with_faults(app, workers, history, faults)

    assert_nothing_lost(app, promises, ran, len(faults), "redis: every connection dropped")


def test_a_server_that_stops_answering_times_out_the_call_which_is_retried(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A frozen server (SIGSTOP: connections stay open, no reply comes) must not hold a call
    # forever: each try is cut off after the URL's socket_timeout, on a new connection,
    # until the server answers again. Without the Client's own timeout the first try
    # would simply wait for SIGCONT and nothing would be retried.
    app = chaos_app.register(pigeon.App(server.url + "&socket_timeout=0.2"))
    try:
        app.tasks["chaos.keyed"].send(0)  # connected, scripts loaded
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        try:
            with caplog.at_level(logging.WARNING, logger="pigeon.backends.redis"):
                resumed = threading.Timer(1.5, server.proc.send_signal, (signal.SIGCONT,))
                resumed.start()
                started = time.monotonic()
                promise = app.tasks["chaos.keyed"].send(1)  # returns once stored
                took = time.monotonic() - started
                resumed.join()
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert 1.0 < took < 10.0
        retries = [r for r in caplog.records if "retrying" in r.getMessage()]
        assert retries, "the call waited for the frozen server instead of timing out"
        stored = app.backend_call_sync(lambda b: b.inspect(promise.id))
        assert stored is not None
        assert stored.state == "pending"
    finally:
        app.close_sync()


async def test_a_silent_subscriber_connection_is_dropped_and_made_again(
    server: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server that stops answering without closing the socket (SIGSTOP here; a vanished
    # host in real life) must not leave waiters on a dead subscription: past SILENCE_LIMIT
    # without a byte, not even a pong, the listener reconnects, and waiters are served again.
    monkeypatch.setattr(redis_listener, "PING_EVERY", 0.1)
    monkeypatch.setattr(redis_listener, "SILENCE_LIMIT", 0.3)
    backend = from_url(server.url)
    await backend.open()
    assert server.proc is not None
    try:
        [message] = make_messages(1)
        await backend.enqueue([message])
        assert await backend.wait([message.id], 0.05) == {}  # subscribed now
        with caplog.at_level(logging.WARNING, logger="pigeon.backends.redis"):
            server.proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(1.0)
            server.proc.send_signal(signal.SIGCONT)
            [delivery] = await backend.fetch([QUEUE], 1, "w", wait=5)
        assert [r for r in caplog.records if "no reply for" in r.getMessage()]
        waiting = asyncio.ensure_future(backend.wait([message.id], 10))
        await asyncio.sleep(0.2)
        assert await backend.settle([succeeded(delivery)]) == [True]
        found = await asyncio.wait_for(waiting, 2)  # heard, not found by the wait's timeout
        assert found[message.id].state == "succeeded"
    finally:
        server.proc.send_signal(signal.SIGCONT)
        await backend.close()
