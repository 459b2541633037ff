"""Real worker processes, real signals: what a crash, a redeploy and a poison message do."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import pigeon
from pigeon.cli import cli
from tests.e2e import e2e_app
from tests.processes import Workers, eventually


@pytest.fixture
def url(shared_url: str) -> str:
    return shared_url


@pytest.fixture
def app(url: str) -> Iterator[pigeon.App]:
    app = e2e_app.register(pigeon.App(url))
    yield app
    app.close_sync()


@pytest.fixture
def workers(url: str) -> Iterator[Workers]:
    w = Workers(url, "tests.e2e.e2e_app:app")
    yield w
    w.stop_all()


def starts(marker: Path) -> list[str]:
    return marker.read_text().splitlines() if marker.exists() else []


def test_sigkill_mid_task_is_redelivered_after_the_lease_and_completes_once(
    app: pigeon.App, workers: Workers, tmp_path: Path
) -> None:
    marker = tmp_path / "starts"
    first = workers.start("-c", "4")
    promise = app.tasks["e2e.slow"].send(str(marker), 0.5)
    eventually(lambda: starts(marker), "the task to start")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    workers.start("-c", "4")
    assert promise.result(timeout=20) == "done"
    attempts = [line.split()[1] for line in starts(marker)]
    assert attempts == ["1", "2"]  # run again after the lease ran out, as the next attempt
    info = app.backend_call_sync(lambda b: b.inspect(promise.id))
    assert info is not None
    assert info.state == "succeeded"


def test_sigterm_drains_running_tasks_and_releases_the_rest_unattempted(
    app: pigeon.App, workers: Workers, tmp_path: Path
) -> None:
    short_marker, long_marker = tmp_path / "short", tmp_path / "long"
    proc = workers.start("-c", "4", "--grace", "1.5")
    short = app.tasks["e2e.slow"].send(str(short_marker), 0.5)
    long = app.tasks["e2e.slow"].send(str(long_marker), 60)
    eventually(lambda: starts(short_marker) and starts(long_marker), "both tasks to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert short.result(timeout=5) == "done"  # finished within the grace period
    info = app.backend_call_sync(lambda b: b.inspect(long.id))
    assert info is not None
    assert info.state == "pending"  # released for another worker at once
    assert info.failures == 0  # no retry spent
    assert info.result is None


def test_a_message_that_kills_its_worker_three_times_is_dead_lettered_as_poison(
    app: pigeon.App, workers: Workers, tmp_path: Path
) -> None:
    marker = tmp_path / "crashes"
    poison = app.tasks["e2e.crash"].send(str(marker))
    ordinary = [app.tasks["e2e.add"].send(i, i) for i in range(20)]

    def run_until_poison_is_dead() -> bool:
        proc = workers.start("-c", "2")
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass  # alive: the poison is not (or no longer) delivered to it
        state = app.backend_call_sync(lambda b: b.inspect(poison.id))
        return state is not None and state.state == "dead"

    eventually(run_until_poison_is_dead, "the poison message to be dead-lettered", timeout=60)
    assert len(starts(marker)) == 3  # three crashes, then never delivered again
    with pytest.raises(pigeon.TaskError) as raised:
        poison.result(timeout=5)
    assert raised.value.type == "Poison"
    letters = app.backend_call_sync(lambda b: b.dead_letters())
    assert [d.id for d in letters] == [poison.id]
    assert "poison" in letters[0].reason
    if all(w.poll() is not None for w in workers.procs):
        workers.start("-c", "2")
    assert [p.result(timeout=20) for p in ordinary] == [2 * i for i in range(20)]


@pytest.mark.parametrize("task", ["e2e.until_cancelled", "e2e.until_cancelled_sync"])
def test_cancelling_a_running_task_reaches_it_within_a_second_and_rejects_its_promise(
    app: pigeon.App, workers: Workers, tmp_path: Path, task: str
) -> None:
    if not hasattr(app.backend, "cancelling"):
        pytest.skip("cancelling() not implemented on this backend yet")
    marker = tmp_path / "marker"
    workers.start("-c", "4")
    promise = app.tasks[task].send(str(marker))
    eventually(lambda: starts(marker), "the task to start")

    asked = time.time()
    assert promise.cancel().result(timeout=5) is True

    with pytest.raises(pigeon.Cancelled):
        promise.result(timeout=5)
    seen = eventually(lambda: starts(marker)[1:], "the task to see its cancellation")
    assert seen[0].startswith("cancelled ")
    assert float(seen[0].split()[1]) - asked < 1.0
    assert promise.status == "cancelled"


def test_pigeon_cancel_id_stops_a_running_message(
    app: pigeon.App, workers: Workers, url: str, tmp_path: Path
) -> None:
    if not hasattr(app.backend, "cancelling"):
        pytest.skip("cancelling() not implemented on this backend yet")
    marker = tmp_path / "marker"
    workers.start("-c", "4")
    promise = app.tasks["e2e.until_cancelled_sync"].send(str(marker))
    eventually(lambda: starts(marker), "the task to start")

    result = CliRunner().invoke(cli, ["cancel", promise.id, "--url", url])

    assert result.exit_code == 0, result.output
    assert f"cancelling {promise.id}: it is running" in result.stdout
    with pytest.raises(pigeon.Cancelled):
        promise.result(timeout=5)
    info = app.backend_call_sync(lambda b: b.inspect(promise.id))
    assert info is not None
    assert info.state == "cancelled"
