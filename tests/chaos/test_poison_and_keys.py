"""A message that kills every worker it reaches ends in the dead letters while the rest
finish; idempotency keys hold with concurrent producers, one of them killed mid-send."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pigeon
from tests.chaos import chaos_app
from tests.chaos.jepsen import TABLES, History, check
from tests.processes import ROOT, Workers, eventually
from tests.servers import scheme_of

ORDINARY = int(os.environ.get("PIGEON_CHAOS_ORDINARY", "2000"))
KEYS = int(os.environ.get("PIGEON_CHAOS_KEYS", "300"))


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


def test_poison_is_dead_lettered_after_three_crashes_while_the_rest_finish(
    app: pigeon.App, workers: Workers, history: Path, shared_url: str
) -> None:
    poison = app.tasks["chaos.crash"].send()
    ordinary = [app.tasks["chaos.keyed"].send(i).id for i in range(ORDINARY)]
    supervisor = workers.start("-c", "20", "-p", "2")  # restarts the workers it kills
    try:

        def settled() -> bool:
            done = app.backend_call_sync(lambda b: b.results([poison.id, *ordinary]))
            return len(done) == len(ordinary) + 1

        eventually(settled, "the poison and every ordinary task to settle", timeout=120)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(30)
    with pytest.raises(pigeon.TaskError) as raised:
        poison.result(timeout=5)
    assert raised.value.type == "Poison"
    assert History.read(history).starts[poison.id] == [1, 2, 3]  # three crashes, no more
    sent = [poison.id, *ordinary]
    outcomes = app.backend_call_sync(lambda b: b.results(sent))
    verdict = check(sent, History.read(history), outcomes, faults=3)
    TABLES.append(verdict.table(f"{scheme_of(shared_url)}: poison among {ORDINARY} tasks"))
    assert verdict.ok == len(ordinary)  # all but the poison
    # What was in flight in a worker the poison killed ran again: its running tasks (at most
    # 20) and those that had returned but whose outcome was not stored yet (a settle batch
    # in flight: no-op tasks return faster than one round trip, so as many again, roughly).
    assert len(verdict.duplicated) <= 3 * 2 * 20
    assert not verdict.lost
    assert not verdict.stale
    assert not verdict.unexpected


PRODUCER = """
import sys, pigeon
from tests.chaos import chaos_app
app = chaos_app.register(pigeon.App(sys.argv[1]))
task = app.tasks["chaos.keyed"]
for i in range(int(sys.argv[2])):
    p = task.options(key=f"key-{i}").send(i)
    print(i, p.id, flush=True)
"""


def test_keys_sent_three_times_by_concurrent_producers_run_once_each(
    app: pigeon.App, workers: Workers, history: Path, shared_url: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    producers = [
        subprocess.Popen(
            [sys.executable, "-c", PRODUCER, shared_url, str(KEYS)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    workers.start("-c", "20")
    victim = producers[0]
    assert victim.stdout is not None
    for _ in range(KEYS // 3):  # let it get a third of the way, then kill it mid-send
        victim.stdout.readline()
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    outputs = [p.communicate(timeout=60)[0] for p in producers[1:]]
    assert all(p.returncode == 0 for p in producers[1:])
    ids_by_key: dict[str, set[str]] = {}
    for out in outputs:
        for line in out.splitlines():
            i, mid = line.split()
            ids_by_key.setdefault(f"key-{i}", set()).add(mid)
    assert len(ids_by_key) == KEYS
    assert all(len(ids) == 1 for ids in ids_by_key.values()), "one message per key"
    sent = [next(iter(ids)) for ids in ids_by_key.values()]

    def all_done() -> bool:
        return len(app.backend_call_sync(lambda b: b.results(sent))) == len(sent)

    eventually(all_done, "every keyed message to settle", timeout=60)
    outcomes = app.backend_call_sync(lambda b: b.results(sent))
    verdict = check(sent, History.read(history), outcomes, faults=1)
    TABLES.append(verdict.table(f"{scheme_of(shared_url)}: {KEYS} keys x 3 producers, 1 killed"))
    assert verdict.ok == KEYS
    assert not verdict.duplicated  # exactly one execution per key
    assert not verdict.unexpected
    assert not verdict.lost
