"""``pigeon worker --metrics-port``: real worker processes on each backend they can share,
scraped over HTTP and parsed with prometheus-client's own parser; the numbers are exact."""

from __future__ import annotations

import os
import signal
import socket
import urllib.request
from collections.abc import Iterator

import pytest

import pigeon
from pigeon.message import Stats
from tests.e2e import metrics_app
from tests.processes import Workers, eventually

parser = pytest.importorskip("prometheus_client.parser")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples | None:
    """Every sample on /metrics, by name and labels (None while nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def url(shared_url: str) -> str:
    """Every backend worker processes can share (SQLite in a tmp path, Redis, PostgreSQL)."""
    return shared_url


@pytest.fixture
def app(url: str) -> Iterator[pigeon.App]:
    app = metrics_app.register(pigeon.App(url))
    yield app
    app.close_sync()


@pytest.fixture
def workers(url: str) -> Iterator[Workers]:
    w = Workers(url, "tests.e2e.metrics_app:app")
    yield w
    w.stop_all()


def settled(promise: pigeon.Promise[object]) -> None:
    try:
        promise.result(timeout=30)
    except pigeon.TaskError:
        pass


def test_a_worker_counts_every_outcome_start_and_failure_exactly(
    app: pigeon.App, workers: Workers
) -> None:
    port = free_port()
    workers.start("-c", "4", "-q", "default,errors", "--metrics-port", str(port))
    promises = [app.tasks["m.ok"].send(i) for i in range(3)]
    promises += [app.tasks["m.fail"].send() for _ in range(2)]
    promises.append(app.tasks["m.flaky"].send())
    for p in promises:
        settled(p)
    samples = eventually(lambda: scrape(port), "the metrics endpoint")

    def count(name: str, task: str, **labels: str) -> float | None:
        return value(samples, name, queue="default", task=task, **labels)

    assert count("pigeon_messages_total", "m.ok", outcome="succeeded") == 3
    assert count("pigeon_messages_total", "m.fail", outcome="dead") == 2
    assert count("pigeon_messages_total", "m.flaky", outcome="retried") == 1
    assert count("pigeon_messages_total", "m.flaky", outcome="succeeded") == 1
    assert count("pigeon_messages_total", "m.ok", outcome="failed") == 0
    assert count("pigeon_messages_started_total", "m.ok") == 3
    assert count("pigeon_messages_started_total", "m.fail") == 2
    assert count("pigeon_messages_started_total", "m.flaky") == 2
    assert count("pigeon_task_failures_total", "m.fail", error="ValueError") == 2
    assert count("pigeon_task_failures_total", "m.flaky", error="KeyError") == 1
    assert count("pigeon_task_run_seconds_count", "m.ok") == 3
    assert count("pigeon_task_run_seconds_bucket", "m.ok", le="+Inf") == 3
    assert count("pigeon_task_run_seconds_count", "m.flaky") == 2
    # Queue wait is measured for every attempt, a retry's from its backoff's end.
    assert count("pigeon_task_queue_wait_seconds_count", "m.flaky") == 2
    assert count("pigeon_task_queue_wait_seconds_count", "m.fail") == 2
    assert value(samples, "pigeon_worker_up", queue="default") == 1
    assert value(samples, "pigeon_worker_up", queue="errors") == 1
    assert value(samples, "pigeon_worker_concurrency") == 4
    assert value(samples, "pigeon_worker_running") == 0


def test_a_retry_waits_from_its_backoff_s_end_not_from_the_first_send(
    app: pigeon.App, workers: Workers
) -> None:
    port = free_port()
    workers.start("-c", "2", "--metrics-port", str(port))
    settled(app.tasks["m.slowflaky"].send(3.0))  # the first attempt runs 3 s, then fails
    samples = eventually(lambda: scrape(port), "the metrics endpoint")

    def count(name: str, **labels: str) -> float | None:
        return value(samples, name, queue="default", task="m.slowflaky", **labels)

    assert count("pigeon_messages_started_total") == 2
    assert count("pigeon_task_queue_wait_seconds_count") == 2
    # neither attempt waited the 3 s the first one ran: the retry counts from its due time
    assert count("pigeon_task_queue_wait_seconds_bucket", le="2.5") == 2


def test_queue_depth_and_dead_letters_are_what_stats_says(
    app: pigeon.App, workers: Workers
) -> None:
    later = app.tasks["m.hold"].options(delay=600)
    for _ in range(3):
        later.send(0.0)
    failing = app.tasks["m.fail"].send()
    port = free_port()
    workers.start("-c", "2", "--metrics-port", str(port))
    settled(failing)
    stats: Stats = app.backend_call_sync(lambda b: b.stats())

    def depth_matches() -> bool:
        samples = scrape(port)
        if samples is None:
            return False
        for queue, counts in stats.queues.items():
            for state in ("waiting", "scheduled", "pending", "leased"):
                got = value(samples, "pigeon_queue_depth", queue=queue, state=state)
                if got != getattr(counts, state):
                    return False
            if value(samples, "pigeon_dead_letters", queue=queue) != counts.dead:
                return False
            if value(samples, "pigeon_queue_paused", queue=queue) != (queue in stats.paused):
                return False
        return True

    eventually(depth_matches, "pigeon_queue_depth to equal Backend.stats")
    assert stats.queues["default"].scheduled == 3


def test_a_supervisor_serves_one_endpoint_whose_totals_add_up_across_its_processes(
    app: pigeon.App, workers: Workers
) -> None:
    port = free_port()
    supervisor = workers.start("-p", "2", "-c", "2", "--metrics-port", str(port))
    promises = [app.tasks["m.pid"].send(0.05) for _ in range(40)]
    pids = {p.result(timeout=60) for p in promises}
    assert len(pids) == 2  # both processes ran some
    labels = {"queue": "default", "task": "m.pid"}

    def flushed() -> Samples | None:
        # A supervised process writes its counts to its metric file once a second, one
        # family after another: a scrape may fall between two of them, so wait for all.
        now = scrape(port)
        names = ("pigeon_messages_started_total", "pigeon_task_run_seconds_count")
        return now if now and all(value(now, n, **labels) == 40 for n in names) else None

    samples = eventually(flushed, "the 40 starts and runs on the supervisor's metrics endpoint")
    assert value(samples, "pigeon_messages_total", outcome="succeeded", **labels) == 40
    assert value(samples, "pigeon_messages_started_total", **labels) == 40
    assert value(samples, "pigeon_task_run_seconds_count", **labels) == 40
    assert value(samples, "pigeon_worker_up", queue="default") == 2
    assert value(samples, "pigeon_worker_concurrency") == 4

    # A child killed and replaced: its live gauges go, its counts stay in the totals.
    killed = sorted(pids)[0]
    os.kill(killed, signal.SIGKILL)

    def replaced() -> bool:
        workers_now = {w.pid for w in app.backend_call_sync(lambda b: b.stats()).workers}
        return killed not in workers_now and len(workers_now) == 2

    eventually(replaced, "a replacement worker process")
    more = [app.tasks["m.pid"].send(0.0) for _ in range(5)]
    for p in more:
        p.result(timeout=30)

    def totals_after_restart() -> bool:
        now = scrape(port) or {}
        return (
            value(now, "pigeon_messages_total", outcome="succeeded", **labels) == 45
            and value(now, "pigeon_worker_up", queue="default") == 2
        )

    eventually(totals_after_restart, "45 successes and 2 live processes")
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0


def test_past_50_exception_types_new_ones_are_counted_as_other(
    app: pigeon.App, workers: Workers
) -> None:
    port = free_port()
    workers.start("-c", "8", "-q", "errors", "--metrics-port", str(port))
    promises = [app.tasks["m.raise"].send(f"Error{n}") for n in range(55)]
    for p in promises:
        settled(p)
    samples = eventually(lambda: scrape(port), "the metrics endpoint")
    by_error = {
        dict(labels)["error"]: n
        for (name, labels), n in samples.items()
        if name == "pigeon_task_failures_total" and dict(labels)["task"] == "m.raise"
    }
    assert len(by_error) == 51
    assert by_error["other"] == 5
    assert sum(by_error.values()) == 55
    assert (
        value(samples, "pigeon_messages_total", queue="errors", task="m.raise", outcome="dead")
        == 55
    )
