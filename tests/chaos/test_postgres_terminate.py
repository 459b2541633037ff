"""PostgreSQL ends pigeon's sessions under it: ``pg_terminate_backend`` on every connection of
the test's pigeon processes (the workers' pools and LISTENing connections, and the sender's),
again and again, while 2,000 tasks run through two real worker processes. Nothing accepted
may be lost, no outcome doubled or stale, and the workers keep working.

The server is shared with other test runs, so only this test's sessions may be terminated.
pigeon names every session ``application_name=pigeon`` whoever runs it, so the test routes
its pigeon processes through a plain forwarding proxy (``tcp_proxy.py``, no faults of its
own) and terminates exactly the sessions whose client port is one of the proxy's
connections to the server.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

import pigeon
from pigeon.backends.postgres import PostgresBackend
from pigeon.errors import BackendError
from pigeon.message import Message, new_id
from tests.chaos.conftest import PROXIED_CONCURRENCY
from tests.chaos.harness import Awaiter, Crew, Sender, elapsed, report, settled, stored_twice
from tests.chaos.jepsen import History, check
from tests.chaos.tcp_proxy import TcpProxy
from tests.processes import eventually
from tests.servers import BACKEND_URLS, cleanup, make_url, require_server, scheme_of

TASKS = 2000
CONCURRENCY = PROXIED_CONCURRENCY
#: A round of terminations every this many acknowledged sends.
EVERY = 150

TERMINATE = """
SELECT pid, query LIKE 'LISTEN%' AS listening, pg_terminate_backend(pid) AS terminated
FROM pg_stat_activity
WHERE client_addr = '127.0.0.1' AND client_port = ANY($1::int[])
  AND application_name = 'pigeon' AND pid <> pg_backend_pid()
"""


@pytest.fixture(params=[u for u in BACKEND_URLS if scheme_of(u) == "postgresql"], ids=scheme_of)
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url = make_url(request.param, tmp_path)
    require_server(url)
    yield url
    asyncio.run(cleanup(url))


class Terminator:
    """Terminates, from a direct connection, the sessions behind the proxy's connections."""

    def __init__(self, server_url: str, proxy: TcpProxy) -> None:
        self.dsn = server_url.split("?", 1)[0]
        self.proxy = proxy
        self.rounds = 0
        self.sessions = 0
        self.listeners = 0

    def terminate(self) -> None:
        rows = asyncio.run(self._terminate(self.proxy.upstream_ports()))
        self.rounds += 1
        self.sessions += sum(1 for r in rows if r["terminated"])
        self.listeners += sum(1 for r in rows if r["terminated"] and r["listening"])

    @staticmethod
    async def _terminate_on(conn: Any, ports: list[int]) -> list[Any]:
        return list(await conn.fetch(TERMINATE, ports))

    async def _terminate(self, ports: list[int]) -> list[Any]:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            return await self._terminate_on(conn, ports)
        finally:
            await conn.close()


def terminate_while_sending(
    terminator: Terminator, sender: Sender, crew: Crew, over: threading.Event
) -> None:
    """A round of terminations every EVERY sends, until ``over`` (sending has ended)."""
    for at in range(EVERY, TASKS, EVERY):
        eventually(
            lambda at=at: len(sender.acknowledged) >= at or over.is_set(), f"{at} sends", 30, 0.001
        )
        if len(sender.acknowledged) < at:
            return  # sending ended early (the test is failing)
        terminator.terminate()
        crew.replace_dead()


def test_terminated_sessions_lose_no_accepted_task(
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
    terminator = Terminator(server_url, proxy)
    over = threading.Event()
    killer = threading.Thread(
        target=terminate_while_sending, args=(terminator, sender, proxied_crew, over)
    )
    killer.start()
    rng = random.Random(13)
    try:
        for _ in range(TASKS):
            awaiter.add(sender.send(rng.randint(1, 20)))
    finally:
        over.set()
        killer.join(60)
    assert terminator.rounds == len(range(EVERY, TASKS, EVERY))
    awaiter.finish(60)
    outcomes = settled(proxied_app, sender.acknowledged, 60, proxied_crew.replace_dead)
    proxied_crew.replace_dead()

    ran = History.read(history)
    verdict = check(sender.acknowledged, ran, outcomes, terminator.rounds)
    lost_listens = sum(
        path.read_text(errors="replace").count("the listening connection was lost")
        for path in Path(proxied_crew.logs).glob("worker-*.log")
    )
    notes = [
        f"pg_terminate_backend: {terminator.sessions} sessions in {terminator.rounds} rounds"
        f" (every {EVERY} sends), {terminator.listeners} of them LISTENing",
        f"workers that saw their LISTEN connection go: {lost_listens} times",
        *sender.notes(),
        f"worker deaths: {', '.join(proxied_crew.deaths) or 'none'}; run took {elapsed(started)}",
    ]
    report(verdict, "postgresql: pigeon's sessions terminated during 2,000 tasks", notes)
    assert not sender.leaked, f"sends raised other than BackendError: {sender.leaked[:3]}"
    assert not awaiter.errors, f"promises that failed: {awaiter.errors[:5]}"
    assert verdict.ok == TASKS
    assert terminator.listeners > 0, "no LISTENing connection was terminated"
    # Terminations fail statements, they do not stall a worker past its leases: a message
    # runs twice only if its worker lost a lease (a fetch whose reply was lost runs nothing).
    assert len(verdict.duplicated) <= terminator.rounds * 2 * CONCURRENCY
    assert not stored_twice(ran), f"stored again after settling: {stored_twice(ran)[:5]}"
    assert not proxied_crew.deaths, (
        f"workers died: {proxied_crew.deaths}\n{proxied_crew.log_tail()}"
    )
    stats = proxied_app.backend_call_sync(lambda b: b.stats(), timeout=10)
    assert stats.queues.get("default", pigeon.message.QueueStats()) == pigeon.message.QueueStats()
    assert stats.dead == 0


async def test_a_terminated_session_fails_a_send_with_backend_error_only(server_url: str) -> None:
    """Directly (no proxy): the backend's sessions are terminated while four senders
    enqueue. A send may fail, but only with BackendError, the documented transient error
    (the test above meets the same through the App)."""
    backend = PostgresBackend(server_url)
    await backend.open()
    schema = urlsplit(server_url).query.partition("schema=")[2]
    failures: Counter[str] = Counter()
    attempts = 0
    stop = asyncio.Event()

    async def send() -> None:
        nonlocal attempts
        # Stopped by the event, not cancelled: a send cancelled just as its session is
        # terminated may raise asyncpg's InternalClientError ("release() called on a free
        # connection holder") instead of CancelledError, and this loop would go on.
        while not stop.is_set():
            try:
                await backend.enqueue([Message(new_id(), "chaos.keyed")])
            except BackendError:
                failures["BackendError"] += 1
            except Exception as exc:
                failures[f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"] += 1
            attempts += 1

    admin = await asyncpg.connect(server_url.split("?", 1)[0], timeout=10)
    senders = [asyncio.create_task(send()) for _ in range(4)]
    try:
        async with asyncio.timeout(30):
            for _ in range(100):
                seen = attempts
                while attempts < seen + 20:  # between two rounds, 20 sends at least
                    await asyncio.sleep(0.001)
                # Only this test's sessions: the last statement of each names its schema.
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'pigeon' AND pid <> pg_backend_pid()"
                    " AND strpos(query, $1) > 0",
                    schema,
                )
    finally:
        stop.set()
        try:
            async with asyncio.timeout(30):
                await asyncio.gather(*senders, return_exceptions=True)
        finally:
            await admin.close()
            await backend.close()
    assert failures["BackendError"] > 0, "no send met a terminated session"
    leaked = {kind: n for kind, n in failures.items() if kind != "BackendError"}
    assert not leaked, f"in {attempts} sends, raised other than BackendError: {leaked}"
