"""Prometheus metrics of pigeon workers (``pigeon worker --metrics-port N``), with
prometheus-client (``pip install 'pigeon[metrics]'``).

Nothing here imports prometheus_client until metrics are turned on: importing pigeon, or
running a worker without ``--metrics-port``, never loads it. A worker without metrics has
no observer (``pigeon.worker.observer``) and does no work for them at all.

Counters and histograms are labelled by ``queue`` and ``task`` only, never by message ids
or arguments; failures are also counted by ``error`` (the exception type), of which at most
``ERROR_VALUES`` distinct values are kept per process, later ones counted as ``other``.
Queue depths and dead letters are read from ``Backend.stats`` when scraped, at most once
per ``STATS_TTL`` seconds whatever the number of scrapers.

With ``-p N`` the supervisor serves one endpoint for its N processes through
prometheus-client's multiprocess mode: it makes a directory for the children's metric
files (``PROMETHEUS_MULTIPROC_DIR``, removed when it exits), sums them on every scrape, and
forgets the live gauges of a child that exited (``mark_process_dead``), while its counters
keep counting. The supervisor itself reads the queue depths.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from pigeon import codec
from pigeon.context import Cancellation
from pigeon.errors import ConfigError
from pigeon.message import Delivery, Message, Outcome, Stats
from pigeon.worker.limits import Deferred
from pigeon.worker.observer import Process, Settle, WorkerView

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from pigeon.app import App

log = logging.getLogger("pigeon.metrics")

#: The histograms' buckets (seconds): OpenTelemetry's messaging buckets, plus 30, 60, 300.
BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
#: Distinct ``error`` label values kept per process; new ones past it count as ``other``.
ERROR_VALUES = 50
#: Seconds a ``Backend.stats`` reading serves scrapes before the next one reads again.
STATS_TTL = 5.0
#: Seconds a scrape waits for ``Backend.stats`` before it serves the last reading.
STATS_TIMEOUT = 2.0
#: The environment variable prometheus-client's multiprocess mode reads.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: The message states ``pigeon_queue_depth`` counts (dead ones are ``pigeon_dead_letters``).
DEPTH_STATES = ("waiting", "scheduled", "pending", "leased")

#: Every metric family pigeon exports (as exposed: counters with their ``_total``).
NAMES = frozenset(
    {
        "pigeon_messages_total",
        "pigeon_messages_started_total",
        "pigeon_task_failures_total",
        "pigeon_task_run_seconds",
        "pigeon_task_queue_wait_seconds",
        "pigeon_queue_depth",
        "pigeon_dead_letters",
        "pigeon_queue_paused",
        "pigeon_worker_running",
        "pigeon_worker_concurrency",
        "pigeon_worker_up",
    }
)


def _prometheus() -> Any:
    """prometheus_client, imported on first use (metrics turned on), or a ConfigError."""
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError("metrics need prometheus-client: pip install 'pigeon[metrics]'") from None
    return prometheus_client


#: ``pigeon_messages_total``'s ``outcome`` values, and the index of each outcome state.
OUTCOME_NAMES = ("succeeded", "failed", "retried", "dead", "cancelled", "interrupted")
_STATE_INDEX = {"succeeded": 0, "failed": 1, "retry": 2, "dead": 3, "cancelled": 4}
_INTERRUPTED = 5
_DEAD = 3
#: Seconds between two writes of a supervised process's counts to its metric files.
FLUSH_EVERY = 1.0


class _Tally:
    """What one (queue, task) counted: plain numbers, all the hot path touches. Histogram
    counts are per bucket (``BUCKETS`` then +Inf), not cumulative."""

    __slots__ = ("outcomes", "queue", "run", "run_sum", "started", "task", "wait", "wait_sum")

    def __init__(self, queue: str, task: str) -> None:
        self.queue = queue
        self.task = task
        self.started = 0
        self.outcomes = [0] * len(OUTCOME_NAMES)
        self.run = [0] * (len(BUCKETS) + 1)
        self.run_sum = 0.0
        self.wait = [0] * (len(BUCKETS) + 1)
        self.wait_sum = 0.0


class _Pushed:
    """A tally's prometheus-client series, and what of the tally they hold already."""

    def __init__(self, metrics: WorkerMetrics, queue: str, task: str) -> None:
        self.started = metrics.started_total.labels(queue, task)
        self.outcomes = [metrics.messages_total.labels(queue, task, o) for o in OUTCOME_NAMES]
        self.run = metrics.run_seconds.labels(queue, task)
        self.wait = metrics.wait_seconds.labels(queue, task)
        self.last = _Tally(queue, task)

    def push(self, tally: _Tally) -> None:
        last = self.last
        started = tally.started
        if started != last.started:
            self.started.inc(started - last.started)
            last.started = started
        outcomes = list(tally.outcomes)  # one copy: the loop's thread may add meanwhile
        for child, now, before in zip(self.outcomes, outcomes, last.outcomes, strict=True):
            if now != before:
                child.inc(now - before)
        last.outcomes = outcomes
        last.run, last.run_sum = _push_histogram(
            self.run, tally.run, tally.run_sum, last.run, last.run_sum
        )
        last.wait, last.wait_sum = _push_histogram(
            self.wait, tally.wait, tally.wait_sum, last.wait, last.wait_sum
        )


def _push_histogram(
    child: Any, counts: list[int], total: float, before: list[int], before_total: float
) -> tuple[list[int], float]:
    """Add the observations made since ``before`` to a prometheus-client histogram.

    prometheus-client has no call to add many observations at once, so its bucket and sum
    values (``_buckets``, ``_sum``: its ValueClass, in-process or multiprocess) are added
    to directly; the version is pinned below 1 in pyproject.toml.
    """
    now = list(counts)
    for value, n, m in zip(child._buckets, now, before, strict=True):
        if n != m:
            value.inc(n - m)
    if total != before_total:
        child._sum.inc(total - before_total)
    return now, total


class _Flush:
    """A collector registered before the others: brings them up to date at each scrape."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> list[Metric]:
        self._metrics.flush()
        return []


class WorkerMetrics:
    """The observer of one worker process (``pigeon.worker.observer.Observer``): counts its
    starts and outcomes and times its runs.

    The hot path only adds to plain numbers (``_Tally``); ``flush`` hands them on to
    prometheus-client: at each scrape of ``registry`` when one is given (the process
    serves), else every ``FLUSH_EVERY`` seconds and at the end, from a thread of its own,
    into the multiprocess files a supervisor reads. ``stats``, when given, is the
    collector of queue depths, which reads the backend only once the worker has opened it
    (``begin``). ``endpoint``: the HTTP server to close when the worker ends.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None,
        *,
        errors: int = ERROR_VALUES,
        stats: QueueStatsCollector | None = None,
    ) -> None:
        prom = _prometheus()
        if registry is not None:
            registry.register(_Flush(self))
        by_task = ["queue", "task"]
        self.messages_total = prom.Counter(
            "pigeon_messages", "Messages settled, by outcome.", [*by_task, "outcome"],
            registry=registry,
        )  # fmt: skip
        self.started_total = prom.Counter(
            "pigeon_messages_started", "Task runs started.", by_task, registry=registry
        )
        self.failures_total = prom.Counter(
            "pigeon_task_failures", "Failed attempts, by exception type.", [*by_task, "error"],
            registry=registry,
        )  # fmt: skip
        self.run_seconds = prom.Histogram(
            "pigeon_task_run_seconds", "Time a task ran.", by_task, buckets=BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.wait_seconds = prom.Histogram(
            "pigeon_task_queue_wait_seconds",
            "Time from a message's due time to its start (every attempt, follow-ups aside).",
            by_task, buckets=BUCKETS, registry=registry,
        )  # fmt: skip
        live: dict[str, Any] = {"registry": registry, "multiprocess_mode": "livesum"}
        self.running = prom.Gauge("pigeon_worker_running", "Tasks running now.", **live)
        self.concurrency = prom.Gauge(
            "pigeon_worker_concurrency", "Tasks the worker processes may run at once.", **live
        )
        self.up = prom.Gauge(
            "pigeon_worker_up", "Worker processes running, by queue consumed.", ["queue"], **live
        )
        self.stats = stats
        self.endpoint: Endpoint | None = None
        self._serves = registry is not None
        self._errors_kept = errors
        self._errors: set[str] = set()
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._failures: dict[tuple[str, str, str], int] = {}
        self._starts: dict[str, tuple[_Tally, float]] = {}
        self._pushed: dict[tuple[str, str], _Pushed] = {}
        self._failures_pushed: dict[tuple[str, str, str], int] = {}
        self._flush_lock = threading.Lock()
        self._stop_flushing = threading.Event()
        self._flusher: threading.Thread | None = None

    # the worker's run -------------------------------------------------------------------------

    def begin(self, worker: WorkerView) -> None:
        self.concurrency.set(worker.concurrency)
        for queue in worker.queues:
            self.up.labels(queue).set(1)
        if self.stats is not None:
            self.stats.ready = True
        if not self._serves:
            self._flusher = threading.Thread(
                target=self._flush_every, name="pigeon-metrics", daemon=True
            )
            self._flusher.start()

    def end(self, worker: WorkerView) -> None:
        if self._flusher is not None:
            self._stop_flushing.set()
            self._flusher.join()
            self._flusher = None
        self.flush()
        for queue in worker.queues:
            self.up.labels(queue).set(0)
        self.concurrency.set(0)
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None

    def _flush_every(self) -> None:
        while not self._stop_flushing.wait(FLUSH_EVERY):
            try:
                self.flush()
            except Exception:
                log.exception("writing metrics failed")

    def flush(self) -> None:
        """Hand what was counted since the last flush on to prometheus-client (any thread:
        the copies below are each made in one step, under the GIL)."""
        with self._flush_lock:
            for tally in list(self._tallies.values()):
                key = (tally.queue, tally.task)
                pushed = self._pushed.get(key)
                if pushed is None:
                    pushed = self._pushed[key] = _Pushed(self, *key)
                pushed.push(tally)
            for labels, n in list(self._failures.items()):
                before = self._failures_pushed.get(labels, 0)
                if n != before:
                    self.failures_total.labels(*labels).inc(n - before)
                    self._failures_pushed[labels] = n
            self.running.set(len(self._starts))

    # one message (the hot path) -----------------------------------------------------------------

    def started(self, d: Delivery, m: Message) -> None:
        tally = self._tallies.get((m.queue, m.task))
        if tally is None:
            tally = self._tally(m.queue, m.task)
        tally.started += 1
        self._starts[d.id] = (tally, time.monotonic())
        if m.after is not None:
            return  # held until its parent settled: its due time is its send's, not its release's
        if d.waited is not None:
            wait = d.waited  # the backend's own reckoning: a retry's or a lost lease's too
        elif d.failures == 0 and m.created_at:
            # A backend that does not tell: due when sent, after its delay, or at run_at
            # (the sender's clock), known for first attempts only.
            wait = time.time() - max(m.created_at + m.delay, m.run_at or 0.0)
        else:
            return
        if wait > 0:
            tally.wait[bisect.bisect_left(BUCKETS, wait)] += 1
            tally.wait_sum += wait
        else:
            tally.wait[0] += 1

    def observe(self, process: Process) -> Process:
        async def observed(d: Delivery, cancellation: Cancellation | None) -> Outcome:
            try:
                outcome = await process(d, cancellation)
            except asyncio.CancelledError:
                self._ended(d, _INTERRUPTED, None)
                raise
            except Deferred:
                self._starts.pop(d.id, None)
                raise
            except Exception:
                self._ended(d, _DEAD, "InternalError")  # the loop dead-letters it
                raise
            error = outcome.error
            if error is not None and outcome.state != "cancelled":
                self._ended(d, _STATE_INDEX[outcome.state], error.type)
            else:
                self._ended(d, _STATE_INDEX[outcome.state], None)
            return outcome

        return observed

    def settling(self, settle: Settle) -> Settle:
        return settle  # outcomes are counted in observe

    def _ended(self, d: Delivery, outcome: int, error: str | None) -> None:
        begun = self._starts.pop(d.id, None)
        if begun is not None:
            tally, at = begun
            if outcome != _INTERRUPTED:
                ran = time.monotonic() - at
                tally.run[bisect.bisect_left(BUCKETS, ran)] += 1
                tally.run_sum += ran
        else:
            tally = self._tally(*_names(d))
        tally.outcomes[outcome] += 1
        if error is not None:
            labels = (tally.queue, tally.task, self._error(error))
            self._failures[labels] = self._failures.get(labels, 0) + 1

    def _tally(self, queue: str, task: str) -> _Tally:
        tally = self._tallies.get((queue, task))
        if tally is None:
            tally = self._tallies[queue, task] = _Tally(queue, task)
        return tally

    def _error(self, error: str) -> str:
        """The ``error`` label of an exception type: itself among the first
        ``ERROR_VALUES`` seen, ``other`` past them (a label per value is a series each)."""
        if error in self._errors:
            return error
        if len(self._errors) >= self._errors_kept:
            return "other"
        self._errors.add(error)
        return error


def _names(d: Delivery) -> tuple[str, str]:
    """(queue, task) of a delivery settled without a start (rare: read its body again)."""
    try:
        m = codec.decode_message(d.body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "unknown", "unknown"
    return m.queue, m.task


class QueueStatsCollector:
    """``pigeon_queue_depth{queue,state}``, ``pigeon_dead_letters{queue}`` and
    ``pigeon_queue_paused{queue}``, from
    ``read()`` (``Backend.stats``) at scrape time, reused for ``ttl`` seconds; a failed
    read is logged and the last reading served. Reads nothing until ``ready``."""

    def __init__(self, read: Callable[[], Stats], ttl: float = STATS_TTL) -> None:
        self.ready = False
        self._read = read
        self._ttl = ttl
        self._lock = threading.Lock()
        self._stats: Stats | None = None
        self._read_at = float("-inf")

    def collect(self) -> list[Metric]:
        prom = _prometheus()
        depth = prom.metrics_core.GaugeMetricFamily(
            "pigeon_queue_depth", "Messages in the queue, by state.", labels=["queue", "state"]
        )
        dead = prom.metrics_core.GaugeMetricFamily(
            "pigeon_dead_letters", "Dead-lettered messages of the queue.", labels=["queue"]
        )
        paused = prom.metrics_core.GaugeMetricFamily(
            "pigeon_queue_paused", "1 while the queue is paused, else 0.", labels=["queue"]
        )
        stats = self.fresh()
        if stats is not None:
            for queue, counts in sorted(stats.queues.items()):
                for state in DEPTH_STATES:
                    depth.add_metric([queue, state], getattr(counts, state))
                dead.add_metric([queue], counts.dead)
            for queue in sorted(stats.queues.keys() | stats.paused.keys()):
                paused.add_metric([queue], 1 if queue in stats.paused else 0)
        return [depth, dead, paused]

    def fresh(self) -> Stats | None:
        """The reading to serve: read again when the last is ``ttl`` old (None: not ready
        or never read). Other collectors of the same scrape share it (the dashboard's)."""
        with self._lock:  # concurrent scrapes share one read
            if not self.ready or time.monotonic() - self._read_at < self._ttl:
                return self._stats
            try:
                self._stats = self._read()
            except Exception as exc:
                log.warning("reading queue depths for metrics failed: %s", exc)
            self._read_at = time.monotonic()  # a failing backend is not asked on every scrape
            return self._stats


def read_stats(app: App) -> Callable[[], Stats]:
    """``Backend.stats`` of ``app``'s backend, from any thread (on the App's home loop)."""

    def read() -> Stats:
        return app.backend_call_sync(lambda b: b.stats(), timeout=STATS_TIMEOUT)

    return read


class Endpoint:
    """The HTTP server of ``/metrics`` on ``host:port``, on a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        prom = _prometheus()
        try:
            server, _ = prom.start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc}") from None
        self._server: WSGIServer = server
        log.info("serving metrics on http://%s:%d/metrics", host, self.port)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def for_worker(app: App, host: str, port: int) -> WorkerMetrics:
    """The metrics of a worker process that serves them itself (``-p 1``): bound to
    ``host:port`` now (a port in use fails before the worker starts)."""
    prom = _prometheus()
    registry = prom.CollectorRegistry()
    stats = QueueStatsCollector(read_stats(app))
    registry.register(stats)
    metrics = WorkerMetrics(registry, stats=stats)
    metrics.endpoint = Endpoint(registry, host, port)
    return metrics


def for_child(directory: str) -> WorkerMetrics:
    """The metrics of a supervised worker process, written to the supervisor's
    ``directory`` (which it set as ``PROMETHEUS_MULTIPROC_DIR`` before starting us)."""
    if os.environ.get(MULTIPROC_ENV) != directory:
        raise ConfigError(
            f"--metrics-dir is for the processes of `pigeon worker -p N --metrics-port P`,"
            f" which set {MULTIPROC_ENV} to it"
        )
    return WorkerMetrics(None)


class Supervised:
    """The endpoint of a supervisor's processes: where they write (``directory``), and what
    to call when one of them has exited (``forget``)."""

    def __init__(self, directory: str, forget: Callable[[int], None]) -> None:
        self.directory = directory
        self.forget = forget


@contextlib.contextmanager
def supervised(app: App, host: str, port: int) -> Iterator[Supervised]:
    """Serve the summed metrics of the supervisor's processes on ``host:port`` until exit.

    Sets ``PROMETHEUS_MULTIPROC_DIR`` (the children inherit it) to a fresh directory,
    removed at exit, and closes ``app`` (which the depth readings open) at exit.
    """
    directory = tempfile.mkdtemp(prefix="pigeon-metrics-")
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = directory
    try:
        prom = _prometheus()
        from prometheus_client import multiprocess

        registry = prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        stats = QueueStatsCollector(read_stats(app))
        stats.ready = True
        registry.register(stats)
        endpoint = Endpoint(registry, host, port)
        try:
            yield Supervised(directory, lambda pid: _mark_dead(multiprocess, pid, directory))
        finally:
            endpoint.close()
            app.close_sync()
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)


def _mark_dead(multiprocess: Any, pid: int, directory: str) -> None:
    """Forget the live gauges of a supervised process that exited."""
    multiprocess.mark_process_dead(pid, directory)
