"""Periodic ticks on the test's clock, and the plugin found through its entry point alone."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

import pigeon
from pigeon.testing import InProcessWorker, ManualClock

clock_app = pigeon.App("memory://")


@clock_app.periodic(every=timedelta(minutes=1), name="clock.tick")
async def tick() -> float | None:
    return pigeon.current().tick


@pytest.fixture
def pigeon_app() -> pigeon.App:
    return clock_app


async def test_an_hour_of_minute_ticks_runs_in_milliseconds(
    pigeon_worker: InProcessWorker, pigeon_clock: ManualClock
) -> None:
    await pigeon_worker.drain()  # the scheduler's first round: a new schedule ticks from now
    began = time.monotonic()
    ran = await pigeon_worker.advance(3600)
    ticks = [r.value for r in ran]
    assert len(ticks) == 60
    assert all(t % 60 == 0 for t in ticks)
    assert [b - a for a, b in itertools.pairwise(ticks)] == [60.0] * 59
    assert ticks[-1] <= pigeon_clock.time() < ticks[-1] + 60
    assert time.monotonic() - began < 10


def test_a_sync_test_moves_the_clock_through_the_worker(
    pigeon_worker: InProcessWorker, pigeon_clock: ManualClock
) -> None:
    pigeon_worker.run_until_idle()  # the scheduler waits on the clock, on the App's thread
    with pytest.raises(RuntimeError, match="advance_sync"):
        pigeon_clock.advance(60)
    assert len(pigeon_worker.advance_sync(180)) == 3


@pytest.mark.pigeon(scheduler=False)
async def test_the_marker_can_leave_the_scheduler_out(pigeon_worker: InProcessWorker) -> None:
    assert await pigeon_worker.advance(600) == []


def test_the_plugin_is_registered_through_its_entry_point(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        "import pigeon\n"
        "import pytest\n"
        "app = pigeon.App()\n"
        "@app.task\n"
        "async def hello(name: str) -> str:\n"
        "    return 'hello ' + name\n"
        "@pytest.fixture\n"
        "def pigeon_app():\n"
        "    return app\n"
        "def test_hello(pigeon_worker):\n"
        "    p = hello.send('you')\n"
        "    pigeon_worker.run_until_idle()\n"
        "    assert p.result(timeout=5) == 'hello you'\n"
        "    assert pigeon_worker.sent(hello)[0].arguments == {'name': 'you'}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
