"""Workers killed and paused while they work: nothing accepted is lost, no stale outcome."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pigeon
from tests.chaos import chaos_app
from tests.chaos.jepsen import TABLES, History, Verdict, check
from tests.processes import Workers, eventually
from tests.servers import scheme_of

TASKS = int(os.environ.get("PIGEON_CHAOS_TASKS", "400"))
CONCURRENCY = 4


@pytest.fixture
def app(shared_url: str) -> Iterator[pigeon.App]:
    app = chaos_app.register(pigeon.App(shared_url))
    yield app
    app.close_sync()


@pytest.fixture
def workers(shared_url: str, history: Path) -> Iterator[Workers]:
    w = Workers(shared_url, "tests.chaos.chaos_app:app", {"PIGEON_CHAOS_LOG": str(history)})
    yield w
    w.stop_all()


def send_all(app: pigeon.App, n: int, rng: random.Random) -> list[str]:
    """Send n tasks of 1-50 ms; the ids whose send was acknowledged (stored)."""
    work = app.tasks["chaos.work"]
    return [work.send(rng.randint(1, 50)).id for _ in range(n)]


def drain(app: pigeon.App, sent: list[str], timeout: float) -> dict[str, pigeon.message.Result]:
    def outcomes() -> dict[str, pigeon.message.Result]:
        return app.backend_call_sync(lambda b: b.results(sent))

    eventually(lambda: len(outcomes()) == len(sent), "every message to settle", timeout=timeout)
    return outcomes()


def report(verdict: Verdict, title: str) -> None:
    TABLES.append(verdict.table(title))
    assert not verdict.lost, f"lost: {verdict.lost[:5]}"
    assert not verdict.unexpected, f"unexpected: {verdict.unexpected[:5]}"
    assert not verdict.stale, f"stale: {verdict.stale[:5]}"


def test_random_worker_sigkills_lose_nothing(
    app: pigeon.App, workers: Workers, history: Path, shared_url: str
) -> None:
    rng = random.Random(7)
    # The backlog first: sends as fast as the workers run would leave too little of the
    # run for the faults (it then ends after one kill).
    sent = send_all(app, TASKS, rng)
    procs = [workers.start("-c", str(CONCURRENCY)) for _ in range(2)]
    kills = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = app.backend_call_sync(lambda b: b.results(sent))
        if len(done) == len(sent):
            break
        time.sleep(0.5)
        victim = rng.randrange(len(procs))
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        kills += 1
        procs[victim] = workers.start("-c", str(CONCURRENCY))
    verdict = check(sent, History.read(history), drain(app, sent, 60), kills)
    report(verdict, f"{scheme_of(shared_url)}: 2 workers, SIGKILL every 0.5 s")
    assert kills >= 2, "the run finished before the faults it is about"
    # At-least-once: only what was in flight in a killed worker may run twice.
    assert len(verdict.duplicated) <= kills * CONCURRENCY
    assert verdict.ok == len(sent)  # exactly one visible outcome each, all succeeded


def pause_outside_a_write(proc: subprocess.Popen[bytes], app: pigeon.App, within: float) -> None:
    """SIGSTOP ``proc`` at a moment it holds no write transaction, within ``within`` seconds.

    A SQLite writer paused inside its transaction (an extend, a heartbeat) holds the
    database's one write lock until it resumes, so nobody else could take the lease over:
    a limit of SQLite itself, not what this test is about. Probe with a write; if it
    cannot get through, let the process go on for a moment and pause it again. Each failed
    probe lets the worker's clock run on, so the task it runs must outlast ``within``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        proc.send_signal(signal.SIGSTOP)
        try:
            app.backend_call_sync(lambda b: b.lock("pause-probe", "test", 1.0), timeout=1.0)
            return
        except pigeon.Timeout:
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.05)
    raise AssertionError(
        f"could not pause the worker outside a write transaction within {within} s"
    )


#: How long the paused worker's attempt runs.
FIRST_S = 3.0


def test_a_paused_worker_past_its_lease_cannot_overwrite_the_outcome(
    app: pigeon.App, workers: Workers, history: Path, shared_url: str
) -> None:
    paused = workers.start("-c", "1")
    work = app.tasks["chaos.work"]
    # Attempt 1 runs FIRST_S under a 1 s lease: long enough that pausing it may take a few
    # probes (on a loaded machine, each lets it run on up to 1 s) before it could finish;
    # the takeover runs 0.2 s.
    promise = work.send(int(FIRST_S * 1000), 200)
    eventually(lambda: History.read(history).starts.get(promise.id), "the task to start")
    started = time.monotonic()
    # it can neither extend nor settle; a probe begun at the deadline still ends before FIRST_S
    pause_outside_a_write(paused, app, within=FIRST_S - 1.5)
    try:
        workers.start("-c", "1")  # takes the lease over once it lapses, runs attempt 2
        result = promise.result(timeout=20)
        assert result["attempt"] == 2
        # Resumed once its sleep is over, the paused worker settles at once, before it
        # could learn from an extend that the lease is gone (and stop the task).
        time.sleep(max(0.0, started + FIRST_S + 0.2 - time.monotonic()))
    finally:
        paused.send_signal(signal.SIGCONT)
    # The paused worker wakes, finishes attempt 1 and tries to settle: refused by fencing.
    eventually(lambda: History.read(history).ends[promise.id] == 2, "attempt 1 to finish late")
    paused.send_signal(signal.SIGTERM)  # it drains (its late settle is made) and exits
    assert paused.wait(20) == 0
    verdict = check([promise.id], History.read(history), drain(app, [promise.id], 10), 1)
    report(verdict, f"{scheme_of(shared_url)}: SIGSTOP past the lease, then SIGCONT")
    assert verdict.ok == 1
    assert app.promise(promise.id).result(timeout=5)["attempt"] == 2
