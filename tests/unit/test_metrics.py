"""pigeon.metrics without processes: the cardinality guard, the cached queue depths, the
seam that keeps a worker without metrics free of them, and the monitoring docs."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from typing import Any

import pytest

import pigeon
from pigeon import codec, metrics
from pigeon.backends.memory import MemoryBackend
from pigeon.context import Cancellation
from pigeon.dashboard import metrics as dashboard_metrics
from pigeon.message import Delivery, Failure, Message, Outcome, QueueStats, Stats, new_id
from pigeon.worker import Worker
from tests.processes import ROOT

prometheus_client = pytest.importorskip("prometheus_client")
parser = pytest.importorskip("prometheus_client.parser")
MONITORING = ROOT / "docs" / "monitoring"


def delivery(task: str = "t.x", queue: str = "q") -> tuple[Delivery, Message]:
    m = Message(new_id(), task, queue)
    return Delivery(m.id, 1, 0, codec.encode_message(m)), m


def dead(d: Delivery, error: str) -> Outcome:
    return Outcome(d.id, d.attempt, "dead", error=Failure(error, "boom", id=d.id))


def sample(registry: Any, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)  # type: ignore[no-any-return]


async def test_error_labels_past_the_bound_are_counted_as_other() -> None:
    registry = prometheus_client.CollectorRegistry()
    watcher = metrics.WorkerMetrics(registry, errors=3)
    outcomes: dict[str, Outcome] = {}

    async def process(d: Delivery, cancellation: Cancellation | None) -> Outcome:
        return outcomes[d.id]

    observed = watcher.observe(process)
    for n in range(6):
        for _ in range(2):
            d, m = delivery()
            outcomes[d.id] = dead(d, f"Error{n}")
            watcher.started(d, m)
            await observed(d, None)
    d, m = delivery()
    outcomes[d.id] = dead(d, "Error0")  # one seen before the bound: still its own
    watcher.started(d, m)
    await observed(d, None)

    labels = {"queue": "q", "task": "t.x"}
    by_error = {
        s.labels["error"]: s.value
        for family in registry.collect()
        if family.name == "pigeon_task_failures"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert by_error == {"Error0": 3, "Error1": 2, "Error2": 2, "other": 6}
    assert sample(registry, "pigeon_messages_total", outcome="dead", **labels) == 13
    assert sample(registry, "pigeon_messages_started_total", **labels) == 13
    assert sample(registry, "pigeon_worker_running") == 0


async def test_a_message_settled_without_a_start_is_counted_under_its_own_names() -> None:
    registry = prometheus_client.CollectorRegistry()
    watcher = metrics.WorkerMetrics(registry)
    d, _ = delivery("t.unknown", "elsewhere")
    bad = Delivery(new_id(), 1, 0, b"not a message")

    async def process(d: Delivery, cancellation: Cancellation | None) -> Outcome:
        return dead(d, "TaskNotFound")

    observed = watcher.observe(process)
    await observed(d, None)
    await observed(bad, None)
    counted = {"outcome": "dead"}
    assert sample(registry, "pigeon_messages_total", queue="elsewhere", task="t.unknown", **counted)
    assert sample(registry, "pigeon_messages_total", queue="unknown", task="unknown", **counted)
    runs = sample(registry, "pigeon_task_run_seconds_count", queue="elsewhere", task="t.unknown")
    assert not runs  # never started: no run time


def test_queue_depths_are_read_once_per_ttl_and_not_before_the_worker_is_ready() -> None:
    reads: list[int] = []

    def read() -> Stats:
        reads.append(1)
        queues = {"q": QueueStats(pending=len(reads), scheduled=2, dead=5)}
        return Stats(queues, results=0, dead=5, workers=[])

    registry = prometheus_client.CollectorRegistry()
    collector = metrics.QueueStatsCollector(read, ttl=60.0)
    registry.register(collector)
    assert sample(registry, "pigeon_queue_depth", queue="q", state="pending") is None
    assert reads == []
    collector.ready = True
    for _ in range(5):
        assert sample(registry, "pigeon_queue_depth", queue="q", state="pending") == 1
    assert sample(registry, "pigeon_queue_depth", queue="q", state="scheduled") == 2
    assert sample(registry, "pigeon_dead_letters", queue="q") == 5
    assert reads == [1]


def test_importing_pigeon_and_its_cli_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, pigeon, pigeon.cli, pigeon.metrics; print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_a_worker_without_an_observer_runs_the_executor_unwrapped() -> None:
    worker = Worker(pigeon.App("memory://"))
    session = worker._start_session(MemoryBackend("memory://"))
    try:
        assert session.process == session.executor.process
        assert session.executor.on_start == worker._on_start
    finally:
        session.executor.shutdown()
        session.gate.close()


# the monitoring docs --------------------------------------------------------------------------

HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


def exported(name: str) -> str:
    """The family a series name belongs to (a histogram's parts name their histogram)."""
    for part in HISTOGRAM_PARTS:
        if name.endswith(part) and name[: -len(part)] in metrics.NAMES:
            return name[: -len(part)]
    return name


def names_in(expressions: list[str]) -> set[str]:
    return {exported(n) for e in expressions for n in re.findall(r"\bpigeon_[a-z_]+\b", e)}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    return exprs


def alert_expressions() -> list[str]:
    yaml = pytest.importorskip("yaml")
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


#: Every name a worker (pigeon.metrics) or the dashboard (pigeon.dashboard.metrics) exports.
EXPORTED = metrics.NAMES | dashboard_metrics.NAMES


def test_the_grafana_dashboard_uses_only_metrics_pigeon_exports_and_shows_them_all() -> None:
    used = names_in(dashboard_expressions())
    assert used <= EXPORTED, used - EXPORTED
    assert used == EXPORTED


def test_the_alert_rules_use_only_metrics_pigeon_exports() -> None:
    rules = alert_expressions()
    assert len(rules) >= 4
    used = names_in(rules)
    assert used, rules
    assert used <= EXPORTED, used - EXPORTED
    # a queue's workers are found by their scrapes and, through the dashboard, heartbeats
    assert {"pigeon_worker_up", "pigeon_workers"} <= used


def test_the_names_pigeon_lists_are_the_names_a_worker_exposes() -> None:
    registry = prometheus_client.CollectorRegistry()
    stats = metrics.QueueStatsCollector(
        lambda: Stats({"q": QueueStats()}, results=0, dead=0, workers=[])
    )
    stats.ready = True
    registry.register(stats)
    watcher = metrics.WorkerMetrics(registry)
    watcher._tally("q", "t.x")  # series exist from a task's first message
    watcher.begin(Worker(pigeon.App("memory://"), ["q"]))
    watcher.failures_total.labels("q", "t.x", "E").inc()
    text = prometheus_client.generate_latest(registry).decode()
    seen = set()
    for family in parser.text_string_to_metric_families(text):
        seen |= {exported(s.name) for s in family.samples if not s.name.endswith("_created")}
    assert seen == metrics.NAMES


def test_a_metrics_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(pigeon.ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            metrics.Endpoint(prometheus_client.CollectorRegistry(), "127.0.0.1", port)
