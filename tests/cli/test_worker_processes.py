"""pigeon worker -p N: the supervisor starts, restarts, recycles and stops real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.cli.conftest import Processes, Project, eventually, pid_alive


def worker_pids(project: Project) -> set[int]:
    return {w.pid for w in project.backend(lambda b: b.stats()).workers}


def test_supervisor_restarts_a_killed_worker_and_stops_cleanly_on_sigterm(
    project: Project, processes: Processes, tmp_path: Path
) -> None:
    log = (tmp_path / "supervisor.log").open("wb")
    supervisor = processes.add(
        project.pigeon("worker", project.spec, "-p", "2", "-c", "2", "--grace", "1", stderr=log)
    )
    first = eventually(lambda: len(worker_pids(project)) == 2 and worker_pids(project), "2 workers")
    processes.orphans |= first
    assert supervisor.pid not in first

    killed, survivor = sorted(first)
    os.kill(killed, signal.SIGKILL)
    replacement = eventually(lambda: worker_pids(project) - first, "a replacement worker")
    processes.orphans |= replacement
    eventually(lambda: not pid_alive(killed), "the killed worker to be reaped")
    assert pid_alive(survivor)
    assert supervisor.poll() is None

    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(20) == 0
    for pid in first | replacement:
        assert not pid_alive(pid), pid
    text = (tmp_path / "supervisor.log").read_text()
    assert f"worker process {killed} (slot" in text
    assert "killed by SIGKILL" in text


def test_a_worker_recycled_after_max_tasks_is_replaced(
    project: Project, processes: Processes, tmp_path: Path
) -> None:
    log = (tmp_path / "supervisor.log").open("wb")
    supervisor = processes.add(
        project.pigeon("worker", project.spec, "-p", "2", "-c", "1", "--max-tasks", "2", stderr=log)
    )

    async def run_eight(tasks: Any) -> list[int]:
        import asyncio

        async with asyncio.timeout(30):
            return list(await asyncio.gather(*(tasks.whoami.send() for _ in range(8))))

    pids = project.run(run_eight)
    processes.orphans |= set(pids)

    # A worker runs at most 2 tasks before it exits 0; 8 tasks took at least 4 processes.
    assert len(set(pids)) >= 4, pids
    assert max(pids.count(pid) for pid in pids) <= 2
    assert supervisor.poll() is None
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(20) == 0
    assert "recycled itself" in (tmp_path / "supervisor.log").read_text()


def test_the_supervisor_gives_up_on_a_worker_that_fails_at_startup(tmp_path: Path) -> None:
    script = (
        "import logging, sys\n"
        "from pigeon.worker.supervisor import supervise\n"
        "logging.basicConfig(level='INFO')\n"
        "sys.exit(supervise([sys.executable, '-c', 'raise SystemExit(3)'], 2, 1.0))\n"
    )
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 1
    assert "exited with code 3" in proc.stderr
    assert "failed at startup 5 times in a row, giving up" in proc.stderr
    assert time.monotonic() - began < 10


def test_a_single_worker_exits_0_on_sigterm_and_leaves_no_record(
    project: Project, processes: Processes
) -> None:
    worker = processes.add(project.pigeon("worker", project.spec, "-q", "default,mail"))
    eventually(lambda: worker.pid in worker_pids(project), "the worker's heartbeat")
    (info,) = project.backend(lambda b: b.stats()).workers
    assert info.queues == ["default", "mail"]

    worker.send_signal(signal.SIGTERM)

    assert worker.wait(15) == 0
    assert worker_pids(project) == set()


def test_sigterm_while_the_workers_are_still_starting_is_a_clean_stop(
    project: Project, processes: Processes
) -> None:
    supervisor = processes.add(
        project.pigeon("worker", project.spec, "-p", "2", stderr=subprocess.PIPE)
    )
    assert supervisor.stderr is not None
    started = 0
    while started < 2:  # the supervisor runs; its children are starting Python right now
        line = supervisor.stderr.readline().decode()
        assert line, "the supervisor exited before starting its workers"
        if "started worker process" in line:
            processes.orphans.add(int(line.split("started worker process ")[1].split()[0]))
            started += 1

    supervisor.send_signal(signal.SIGTERM)

    assert supervisor.wait(20) == 0
    assert not any(pid_alive(pid) for pid in processes.orphans)


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    child = (
        "import pathlib, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    script = (
        "import sys\n"
        "from pigeon.worker.supervisor import supervise\n"
        f"sys.exit(supervise([sys.executable, '-c', {child!r}], 1, 0.5))\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        eventually(ready.exists, "the stubborn worker to start")
        supervisor.send_signal(signal.SIGTERM)
        began = time.monotonic()
        _, err = supervisor.communicate(timeout=30)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    assert supervisor.returncode == 1
    assert 5.0 < time.monotonic() - began < 15  # grace 0.5 s + the 5 s margin
    assert b"did not exit within 5.5s; killing it" in err
