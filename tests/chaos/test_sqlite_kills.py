"""SQLite writers killed mid-transaction: two worker processes and a sender process share one
database file, and the test SIGKILLs them at random moments, the sender while a batch is
being sent. No acknowledged message may be lost, a batch is stored whole or not at all, and
the file passes ``PRAGMA integrity_check`` afterwards.

The sender (``batch_sender.py``) journals each batch before sending it and acknowledges it
after; a sender killed in between leaves the batch in doubt, and the next one re-sends it with
the same ids (first saying how many of it were already stored). Every process is a writer:
the sender's enqueues, the workers' fetches, settles, lease extensions and heartbeats are
each one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pigeon
from tests.chaos import chaos_app
from tests.chaos.batch_sender import Journal
from tests.chaos.harness import elapsed, report, settled, stored_twice
from tests.chaos.jepsen import History, check
from tests.processes import ROOT, Workers, eventually
from tests.servers import BACKEND_URLS, make_url, scheme_of

TASKS = 3000
CONCURRENCY = 8
SENDER_KILLS = 8
WORKER_KILLS = 12
#: The sender waits for the backlog to fall below this before each batch, so that it sends
#: (and is killed) all through the run rather than in its first second.
BACKLOG = 150
#: A sender is killed at most this many seconds into the send of a batch.
KILL_WITHIN = 0.003


@pytest.fixture(params=[u for u in BACKEND_URLS if scheme_of(u) == "sqlite"], ids=scheme_of)
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_url(request.param, tmp_path)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.log")


@pytest.fixture
def app(sqlite_url: str) -> Iterator[pigeon.App]:
    app = chaos_app.register(pigeon.App(sqlite_url))
    yield app
    app.close_sync()


@pytest.fixture
def workers(sqlite_url: str, history: Path) -> Iterator[Workers]:
    w = Workers(sqlite_url, "tests.chaos.chaos_app:app", {"PIGEON_CHAOS_LOG": str(history)})
    yield w
    w.stop_all()


class Senders:
    """``batch_sender`` processes, one at a time; none outlives the test."""

    def __init__(self, url: str, journal: Journal, log: Path) -> None:
        self.env = {
            **os.environ,
            "PIGEON_URL": url,
            "PIGEON_CHAOS_JOURNAL": str(journal.path),
            "PYTHONPATH": str(ROOT),
            "PIGEON_CHAOS_BACKLOG": str(BACKLOG),
        }
        self.log = log
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.batch_sender", str(TASKS)],
                cwd=ROOT,
                env=self.env,
                stderr=log,
            )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def senders(sqlite_url: str, journal: Journal, tmp_path: Path) -> Iterator[Senders]:
    s = Senders(sqlite_url, journal, tmp_path / "sender.log")
    yield s
    s.stop_all()


def journal_size(journal: Journal) -> int:
    try:
        return journal.path.stat().st_size
    except FileNotFoundError:
        return 0


def sending_a_batch(journal: Journal, since: int) -> bool:
    """Whether the journal's last line is an intent written after offset ``since`` (when
    the current sender started): that sender is sending a batch right now."""
    try:
        with journal.path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(since, end - 8192))
            tail = f.read()
    except FileNotFoundError:
        return False
    lines = tail.split(b"\n")
    return len(lines) > 1 and lines[-2].startswith(b"I ")


def kill_mid_batch(
    sender: subprocess.Popen[bytes], since: int, journal: Journal, rng: random.Random
) -> bool | None:
    """SIGKILL the sender at a random moment while it sends a batch: from the moment the
    batch is journalled as in flight, up to KILL_WITHIN seconds later (a batch acknowledged
    sooner escapes, and the next one is tried). Whether it died mid-batch; None if it had
    finished sending everything first."""
    for _ in range(20):
        eventually(
            lambda: sending_a_batch(journal, since) or sender.poll() is not None,
            "the sender to send a batch",
            timeout=20,
            interval=0.0005,
        )
        if sender.poll() is not None:
            return None
        at = time.monotonic() + rng.uniform(0, KILL_WITHIN)
        eventually(
            lambda at=at: time.monotonic() >= at or not sending_a_batch(journal, since),
            "the moment chosen to kill the sender",
            timeout=5,
            interval=0.0005,
        )
        if sending_a_batch(journal, since):
            break
    kill(sender)
    return sending_a_batch(journal, since)


def history_size(history: Path) -> int:
    """The history's length in bytes: a cheap clock of executions (a start and an end line
    of about 65 bytes each per execution), read every few milliseconds."""
    try:
        return history.stat().st_size
    except FileNotFoundError:
        return 0


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


def test_writers_killed_mid_transaction_lose_nothing_and_keep_the_file_sound(
    sqlite_url: str,
    app: pigeon.App,
    workers: Workers,
    senders: Senders,
    journal: Journal,
    history: Path,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    rng = random.Random(17)
    args = ("-c", str(CONCURRENCY), "--no-scheduler")
    crew = [workers.start(*args, log=tmp_path / f"worker-{i}.log") for i in range(2)]
    sender, since = senders.start(), journal_size(journal)
    plan = ["sender"] * SENDER_KILLS + ["worker"] * WORKER_KILLS
    rng.shuffle(plan)
    killed: dict[str, int] = {"sender mid-batch": 0, "sender": 0, "worker": 0}
    for victim in plan:
        if victim == "sender" and sender.poll() is None:
            mid_batch = kill_mid_batch(sender, since, journal, rng)
            if mid_batch is not None:
                killed["sender mid-batch" if mid_batch else "sender"] += 1
                sender, since = senders.start(), journal_size(journal)
        else:
            # After some 40 to 160 executions more: any moment of a worker's life.
            target = history_size(history) + 130 * rng.randint(40, 160)
            eventually(
                lambda target=target, sender=sender: (
                    history_size(history) >= target or sender.poll() == 0
                ),
                f"the history to reach {target} bytes",
                timeout=20,
                interval=0.005,
            )
            i = rng.randrange(len(crew))
            kill(crew[i])
            killed["worker"] += 1
            crew[i] = workers.start(*args, log=tmp_path / f"worker-{len(workers.procs)}.log")
        for proc in crew:
            assert proc.poll() is None, f"worker {proc.pid} died by itself: {proc.returncode}"
        assert sender.poll() in (None, 0), f"the sender failed: {sender.returncode}"

    assert sender.wait(60) == 0, (tmp_path / "sender.log").read_text()[-2000:]
    intended, acknowledged, recoveries = journal.read()
    sent = [mid for mid in intended if mid in acknowledged]
    assert len(sent) == len(acknowledged) >= TASKS
    assert set(intended) == acknowledged, "a batch in doubt was never re-sent"
    outcomes = settled(app, sent, 60)
    for proc in crew:
        assert proc.poll() is None, f"worker {proc.pid} died by itself: {proc.returncode}"
        proc.send_signal(signal.SIGTERM)
    for proc in crew:
        assert proc.wait(20) == 0
    app.close_sync()

    ran = History.read(history)
    faults = sum(killed.values())
    verdict = check(sent, ran, outcomes, faults)
    stored_before = sum(stored for stored, _ in recoveries)
    notes = [
        f"SIGKILLs: sender {killed['sender mid-batch']} mid-batch + {killed['sender']} between"
        f" batches, workers {killed['worker']}",
        f"batches in doubt re-sent with the same ids: {len(recoveries)}, found already stored:"
        f" {sum(1 for stored, _ in recoveries if stored)} ({stored_before} messages)",
        f"run took {elapsed(started)}",
    ]
    report(verdict, "sqlite: 2 workers + a batch sender, SIGKILLed at random", notes)
    assert verdict.ok == len(sent)
    assert all(stored in (0, size) for stored, size in recoveries), f"torn: {recoveries}"
    assert not stored_twice(ran), f"stored again after settling: {stored_twice(ran)[:5]}"
    assert len(verdict.duplicated) <= killed["worker"] * CONCURRENCY
    assert killed["sender mid-batch"] >= 1, "no kill landed while a batch was being sent"
    assert integrity(sqlite_url) == "ok"


def integrity(url: str) -> Any:
    path = url.removeprefix("sqlite:///")
    path = path if path.startswith("/") else f"/{path}"
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
