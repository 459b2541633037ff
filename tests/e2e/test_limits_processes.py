"""Rate and concurrency limits across real worker processes, one of them SIGKILLed."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import pigeon
from tests.control.test_limits import most_in_any_window
from tests.e2e import e2e_app
from tests.processes import Workers, eventually


@pytest.fixture
def app(shared_url: str) -> Iterator[pigeon.App]:
    app = e2e_app.register(pigeon.App(shared_url))
    yield app
    app.close_sync()


@pytest.fixture
def workers(shared_url: str) -> Iterator[Workers]:
    w = Workers(shared_url, "tests.e2e.e2e_app:app")
    yield w
    w.stop_all()


def test_a_rate_of_50_per_second_holds_across_two_workers_over_5_seconds(
    app: pigeon.App, workers: Workers, tmp_path: Path
) -> None:
    marker = tmp_path / "starts"
    paced = app.tasks["e2e.paced"]
    promises = [paced.send(str(marker)) for _ in range(300)]  # 6 s worth at 50/s
    workers.start("-c", "20", "--no-scheduler")
    workers.start("-c", "20", "--no-scheduler")

    pigeon.Promise.all(promises).result(timeout=60)

    starts = sorted(float(line) for line in marker.read_text().split())
    assert len(starts) == 300
    assert starts[-1] - starts[0] >= 5.0
    assert most_in_any_window(starts, 1.0) <= 52  # 50/s: the first at once, ms clocks


def test_a_concurrency_limit_holds_when_a_worker_holding_places_is_killed(
    app: pigeon.App, workers: Workers, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    narrow = app.tasks["e2e.narrow"]
    victim = workers.start("-c", "4", "--no-scheduler")
    long = [narrow.send(str(marker), 2.0) for _ in range(2)]
    eventually(lambda: marker.exists() and marker.read_text().count("start") == 2, "2 starts")
    victim.send_signal(signal.SIGKILL)  # both places are held by a dead worker now
    victim.wait(10)
    killed_at = _now()
    short = [narrow.send(str(marker), 0.2) for _ in range(6)]
    workers.start("-c", "4", "--no-scheduler", log=tmp_path / "log")
    workers.start("-c", "4", "--no-scheduler", log=tmp_path / "log")

    pigeon.Promise.all(long + short).result(timeout=60)

    runs = _intervals(marker.read_text().splitlines(), victim.pid, killed_at)
    assert len(runs) == 2 + 2 + 6  # the killed pair ran again, elsewhere
    assert _most_at_once(runs) == 2


def _now() -> float:
    import time

    return time.time()


def _intervals(lines: list[str], killed_pid: int, killed_at: float) -> list[tuple[float, float]]:
    """(start, end) of each run; the killed worker's runs end when it was killed."""
    open_runs: dict[str, tuple[int, float]] = {}
    runs: list[tuple[float, float]] = []
    for line in lines:
        kind, pid, run, at = line.split()
        if kind == "start":
            open_runs[run] = (int(pid), float(at))
        else:
            runs.append((open_runs.pop(run)[1], float(at)))
    for pid, start in open_runs.values():
        assert pid == killed_pid, "a run that never ended in a live worker"
        runs.append((start, killed_at))
    return runs


def _most_at_once(runs: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in runs] + [(e, -1) for _, e in runs])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most
