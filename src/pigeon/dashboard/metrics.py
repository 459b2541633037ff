"""The dashboard's ``/metrics``: the Prometheus exposition of what ``Backend.stats`` tells,
for a Prometheus that scrapes the dashboard rather than (or besides) the workers.

It serves ``pigeon.metrics.QueueStatsCollector``'s gauges (``pigeon_queue_depth``,
``pigeon_dead_letters``, ``pigeon_queue_paused``: one reading of ``stats`` per
``STATS_TTL`` seconds however often it is scraped) and, from the workers' heartbeats in
the same reading, ``pigeon_workers{queue}``, ``pigeon_workers_running`` and
``pigeon_workers_concurrency``. Those are totals over every live worker, named apart from
a worker's own ``pigeon_worker_up``/``_running``/``_concurrency`` (one process's, summed
by the query): under the same names, a Prometheus scraping both would count each worker
twice, and ``absent(pigeon_worker_up == 1)`` would miss a queue served by two workers.
The worker's counters and histograms are not here: they live in the worker processes.

Served only with prometheus-client installed (``pip install 'pigeon[metrics]'``); without
it ``/metrics`` is a 404 that says so. The page is guarded like every other page
(``security.Guard``): the token, or this machine only.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from pigeon.app import App
from pigeon.metrics import QueueStatsCollector, read_stats

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

#: The families the dashboard adds to the queue gauges of ``pigeon.metrics``.
NAMES = frozenset({"pigeon_workers", "pigeon_workers_running", "pigeon_workers_concurrency"})

#: What ``/metrics`` answers (404) when prometheus-client is not installed.
MISSING = "this dashboard serves /metrics with prometheus-client: pip install 'pigeon[metrics]'"


class WorkerGauges:
    """The live workers by their heartbeats, from the reading ``stats`` serves."""

    def __init__(self, stats: QueueStatsCollector) -> None:
        self._stats = stats

    def collect(self) -> list[Metric]:
        from prometheus_client.metrics_core import GaugeMetricFamily

        workers = GaugeMetricFamily(
            "pigeon_workers",
            "Worker processes with a live heartbeat, by queue consumed.",
            labels=["queue"],
        )
        running = GaugeMetricFamily(
            "pigeon_workers_running", "Tasks running now in the live workers (heartbeats)."
        )
        concurrency = GaugeMetricFamily(
            "pigeon_workers_concurrency", "Tasks the live workers may run at once (heartbeats)."
        )
        stats = self._stats.fresh()
        if stats is not None:
            by_queue: dict[str, int] = dict.fromkeys(stats.queues, 0)
            for w in stats.workers:
                for queue in w.queues:
                    by_queue[queue] = by_queue.get(queue, 0) + 1
            for queue, n in sorted(by_queue.items()):
                workers.add_metric([queue], n)
            running.add_metric([], sum(w.running for w in stats.workers))
            concurrency.add_metric([], sum(w.concurrency for w in stats.workers))
        return [workers, running, concurrency]


class MetricsPage:
    """The ``/metrics`` endpoint of one App's dashboard (its registry made on first use)."""

    def __init__(self, pigeon_app: App) -> None:
        self._app = pigeon_app
        self._lock = threading.Lock()
        self._registry: CollectorRegistry | None = None

    async def __call__(self, request: Request) -> Response:
        try:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        except ImportError:
            return PlainTextResponse(MISSING + "\n", status_code=404)
        # In a thread: the collectors read ``stats`` through the App's home loop, which may
        # be this very loop (``App.backend_call_sync`` from it would wait on itself).
        body = await run_in_threadpool(generate_latest, self._registered())
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def _registered(self) -> CollectorRegistry:
        with self._lock:
            if self._registry is None:
                from prometheus_client import CollectorRegistry

                registry = CollectorRegistry()
                stats = QueueStatsCollector(read_stats(self._app))
                stats.ready = True
                registry.register(stats)
                registry.register(WorkerGauges(stats))
                self._registry = registry
            return self._registry
