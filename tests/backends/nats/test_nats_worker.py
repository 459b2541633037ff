"""Real ``pigeon worker`` processes on ``nats://``: results come back through the App, and a
worker SIGKILLed mid-task loses nothing (its lease runs
out on the server's clock and the next attempt completes the task once)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import pigeon
from tests.e2e import e2e_app
from tests.processes import Workers, eventually


@pytest.fixture
def app(nats_url: str) -> Iterator[pigeon.App]:
    app = e2e_app.register(pigeon.App(nats_url))
    yield app
    app.close_sync()


@pytest.fixture
def workers(nats_url: str) -> Iterator[Workers]:
    w = Workers(nats_url, "tests.e2e.e2e_app:app")
    yield w
    w.stop_all()


def test_a_worker_process_runs_the_tasks_and_their_results_come_back(
    app: pigeon.App, workers: Workers
) -> None:
    workers.start("-c", "8")
    add = app.tasks["e2e.add"]
    promises = [add.send(n, n) for n in range(20)]

    assert [p.result(timeout=20) for p in promises] == [2 * n for n in range(20)]


def test_sigkill_mid_task_is_redelivered_after_the_lease_and_completes_once(
    app: pigeon.App, workers: Workers, tmp_path: Path
) -> None:
    marker = tmp_path / "starts"
    first = workers.start("-c", "4")
    promise = app.tasks["e2e.slow"].send(str(marker), 0.5)
    eventually(lambda: marker.exists() and marker.read_text(), "the task to start")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    workers.start("-c", "4")

    assert promise.result(timeout=30) == "done"
    attempts = [line.split()[1] for line in marker.read_text().splitlines()]
    assert attempts == ["1", "2"]
    info = app.backend_call_sync(lambda b: b.inspect(promise.id))
    assert info is not None
    assert info.state == "succeeded"
