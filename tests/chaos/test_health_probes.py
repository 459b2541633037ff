"""The health probes of real worker processes, under real faults: a private redis-server
SIGSTOPped under a worker (not ready, then ready again by itself, never not live), an event
loop blocked by a sync call (not live while it lasts), the health file, and a supervisor
answering for its processes.

Deadlines are short (2 s) so that the faults show quickly; every wait is a poll with a
generous deadline, so a slow, shared machine delays the tests without failing them.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pigeon
from tests.chaos import health_app
from tests.chaos.redis_server import free_port, private_redis
from tests.processes import Workers, eventually

#: Probe deadlines given to the workers under test (seconds): readiness only, and both.
#: (Liveness keeps its default in the broker test: a fetch waiting on a stopped broker
#: is bounded by the backend's own retry window, longer than 2 s.)
READY_FAST = ("--ready-deadline", "2", "--no-scheduler")
FAST = ("--health-deadline", "2", *READY_FAST)

Probe = tuple[int | None, dict[str, Any] | None]


def probe(port: int, path: str) -> Probe:
    """GET a probe: its status and JSON body, or (None, None) when nothing answers."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return None, None


def answers(port: int, path: str, status: int) -> Callable[[], Probe | None]:
    """A check for ``eventually``: the probe's answer once it has this status."""

    def check() -> Probe | None:
        answer = probe(port, path)
        return answer if answer[0] == status else None

    return check


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pigeon.db'}"


@pytest.fixture
def workers(sqlite_url: str) -> Iterator[Workers]:
    w = Workers(sqlite_url, "tests.chaos.health_app:app")
    yield w
    w.stop_all()


def test_a_worker_whose_redis_is_stopped_is_not_ready_then_ready_again_by_itself(
    tmp_path: Path,
) -> None:
    with private_redis(tmp_path / "redis") as server:
        assert server.proc is not None
        # A reply timeout of 1 s: the stop outlasts it, so the worker's calls time out and
        # are retried on new connections, as in a real outage.
        workers = Workers(f"{server.url}&socket_timeout=1", "tests.chaos.health_app:app")
        port = free_port()
        log = tmp_path / "worker.log"
        try:
            workers.start("--health-port", str(port), *READY_FAST, log=log)
            eventually(answers(port, "/readyz", 200), "the worker to be ready", timeout=30)

            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                _, body = eventually(
                    answers(port, "/readyz", 503), "not ready with redis stopped", timeout=20
                )
                assert body is not None
                assert "backend has not answered" in body["reason"]
                # A broker outage is not a dead worker: it must not be restarted for it.
                assert probe(port, "/livez")[0] == 200
                eventually(lambda: "retrying in" in log.read_text(), "a call timed out")
                assert probe(port, "/readyz")[0] == 503
                assert probe(port, "/livez")[0] == 200
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)

            _, body = eventually(answers(port, "/readyz", 200), "ready again", timeout=60)
            assert body == {"status": "ready", "reason": "fetching"}
            assert workers.alive(), "the worker exited instead of waiting for the broker"
        finally:
            workers.stop_all()


def test_a_worker_whose_event_loop_is_blocked_by_a_sync_call_is_not_live(
    workers: Workers, sqlite_url: str, tmp_path: Path
) -> None:
    port = free_port()
    workers.start("--health-port", str(port), *FAST, log=tmp_path / "worker.log")
    eventually(answers(port, "/livez", 200), "the worker to be live", timeout=30)

    app = health_app.register(pigeon.App(sqlite_url))
    try:
        app.tasks["health.block"].fire(10.0)
    finally:
        app.close_sync()

    _, body = eventually(answers(port, "/livez", 503), "not live while blocked", timeout=20)
    assert body is not None
    assert body["status"] == "not live"
    assert "event loop has not answered" in body["reason"]
    assert probe(port, "/readyz")[0] == 503
    # Once the sync call returns, the loop answers again: live by itself.
    eventually(answers(port, "/livez", 200), "live again after the block", timeout=40)


def test_the_health_file_is_rewritten_while_live_and_removed_at_exit(
    workers: Workers, tmp_path: Path
) -> None:
    path = tmp_path / "health.json"
    proc = workers.start("--health-file", str(path), *FAST, log=tmp_path / "worker.log")

    def ready() -> dict[str, Any] | None:
        try:
            report: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return report if report["ready"] else None

    report = eventually(ready, "a health file saying ready", timeout=30)
    assert report["live"] is True
    assert report["pid"] == proc.pid
    first = path.stat().st_mtime_ns
    eventually(lambda: path.stat().st_mtime_ns > first, "the health file to be touched again")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not path.exists()


def test_a_supervisor_answers_the_probes_for_all_its_processes(
    workers: Workers, sqlite_url: str, tmp_path: Path
) -> None:
    port = free_port()
    supervisor = workers.start(
        "-p", "2", "-c", "2", "--health-port", str(port), *FAST, log=tmp_path / "worker.log"
    )
    _, body = eventually(answers(port, "/readyz", 200), "the pool to be ready", timeout=40)
    assert body == {"status": "ready", "reason": "2 workers"}

    app = health_app.register(pigeon.App(sqlite_url))
    try:
        app.tasks["health.block"].fire(10.0)
    finally:
        app.close_sync()
    _, body = eventually(answers(port, "/livez", 503), "one blocked process", timeout=30)
    assert body is not None
    assert body["reason"].startswith("worker ")
    eventually(answers(port, "/livez", 200), "live again after the block", timeout=40)

    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(40) == 0
