"""Leases and delays follow the backend's clock: a worker whose clock is minutes off
neither steals a live lease nor runs a delayed message early."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pigeon
from tests.chaos import chaos_app
from tests.chaos.jepsen import History
from tests.processes import Workers, eventually

SKEW = 300.0  # five minutes


@pytest.fixture
def app(shared_url: str) -> Iterator[pigeon.App]:
    app = chaos_app.register(pigeon.App(shared_url))
    yield app
    app.close_sync()


def workers_with_clock(url: str, history: Path, offset: float) -> Workers:
    env = {"PIGEON_CHAOS_LOG": str(history), "PIGEON_CHAOS_CLOCK_OFFSET": str(offset)}
    return Workers(url, "tests.chaos.chaos_app:app", env)


@pytest.mark.parametrize("offset", [SKEW, -SKEW], ids=["ahead", "behind"])
def test_a_skewed_worker_does_not_run_a_delayed_message_early(
    app: pigeon.App, shared_url: str, history: Path, offset: float
) -> None:
    skewed = workers_with_clock(shared_url, history, offset)
    try:
        skewed.start("-c", "2")
        sent_at = time.clock_gettime(time.CLOCK_REALTIME)
        promise = app.tasks["chaos.work"].options(delay=1.5).send(1)
        assert promise.result(timeout=20)["attempt"] == 1
        started = History.read(history).started_at[promise.id]
        assert started[0] >= sent_at + 1.5 - 0.05  # not early (50 ms of clock resolution)
    finally:
        skewed.stop_all()


def test_a_worker_whose_clock_is_ahead_does_not_steal_a_live_lease(
    app: pigeon.App, shared_url: str, history: Path
) -> None:
    honest = workers_with_clock(shared_url, history, 0.0)
    ahead = workers_with_clock(shared_url, history, SKEW)
    try:
        honest.start("-c", "1")
        promise = app.tasks["chaos.work"].send(3000)  # 3 s under a 1 s lease, extended
        eventually(lambda: History.read(history).starts.get(promise.id), "the task to start")
        ahead.start("-c", "1")  # fetching all along, with its clock 5 minutes ahead
        assert promise.result(timeout=20)["attempt"] == 1
        assert History.read(history).starts[promise.id] == [1]  # never taken over
    finally:
        honest.stop_all()
        ahead.stop_all()
