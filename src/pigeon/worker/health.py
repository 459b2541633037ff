"""Health probes of a worker process: ``/livez`` and ``/readyz`` over HTTP, and a health file.

The probes are answered from threads of their own, never from the worker's event loop, so
that they still answer (with 503) while a sync call inside an async task blocks that loop.
What they judge is a handful of monotonic timestamps, read without locks:

- **live**: the event loop answers (a monitor thread asks it every ``beat`` seconds, with
  ``call_soon_threadsafe``, to write down the time: a blocked loop stops writing) and the
  fetch loop has begun a fetch within ``deadline`` seconds, unless every slot is busy (a
  full worker has nothing to fetch for). A broker outage does not make a worker not live:
  its fetches keep failing and being retried, each bounded by the backend's own timeouts.
- **ready**: the worker has fetched at least once, is not stopping, is live, and the
  backend answered (a fetch or a heartbeat) within ``ready_deadline`` seconds. A broker
  outage makes it not ready, and ready again by itself when the broker answers.

The health file (``--health-file``) holds the same verdicts as JSON, rewritten every beat
while the worker is live (its modification time is the liveness an exec probe reads) and
removed as soon as it is not.

Under a supervisor (``-p N``) the supervisor answers for the pool (``PoolHealth``): each
child writes a health file of its own into a private directory, and the pool is live when
every child is (its file is fresh, or it started less than ``deadline`` seconds ago), ready
when every child is ready.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from pigeon.errors import ConfigError

log = logging.getLogger("pigeon.health")

#: Seconds between two beats at most (less with short deadlines: a quarter of the shorter).
MAX_BEAT = 1.0


@dataclass(frozen=True)
class HealthConfig:
    """``--health-port``, ``--health-host``, ``--health-file``, ``--health-deadline`` and
    ``--ready-deadline``. Nothing is served or written when both port and file are None."""

    port: int | None = None
    host: str = "127.0.0.1"
    file: Path | None = None
    deadline: float = 60.0
    ready_deadline: float = 10.0

    @property
    def enabled(self) -> bool:
        return self.port is not None or self.file is not None

    @property
    def beat(self) -> float:
        return min(MAX_BEAT, self.deadline / 4, self.ready_deadline / 4)


@dataclass(frozen=True)
class Verdict:
    """One probe's answer: whether it passes, and why (in a few words)."""

    ok: bool
    reason: str

    def body(self, passed: str, failed: str) -> dict[str, Any]:
        return {"status": passed if self.ok else failed, "reason": self.reason}


class Judge(Protocol):
    """What the HTTP server and the health file ask: the two verdicts, now."""

    def liveness(self) -> Verdict: ...

    def readiness(self) -> Verdict: ...

    def beat(self) -> None: ...


class WorkerVitals(Protocol):
    """What a ``Worker`` keeps for its probes (monotonic times, 0.0 for never)."""

    @property
    def fetch_started_at(self) -> float: ...

    @property
    def answered_at(self) -> float: ...

    @property
    def running(self) -> int: ...

    @property
    def concurrency(self) -> int: ...

    @property
    def stopping(self) -> bool: ...


class WorkerHealth:
    """The verdicts on one worker running on ``loop``."""

    def __init__(self, worker: WorkerVitals, loop: Any, config: HealthConfig) -> None:
        self.worker = worker
        self.loop = loop  # an asyncio event loop: call_soon_threadsafe is all we use
        self.config = config
        self.started_at = time.monotonic()
        self.ticked_at = self.started_at  # written by the event loop, read by the probes

    def beat(self) -> None:
        """Ask the event loop to write down the time (from any thread)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the worker is exiting
            self.loop.call_soon_threadsafe(self._tick)

    def _tick(self) -> None:
        self.ticked_at = time.monotonic()

    def liveness(self) -> Verdict:
        now = time.monotonic()
        deadline = self.config.deadline
        silent = now - self.ticked_at
        if silent > deadline:
            return Verdict(False, f"the event loop has not answered for {silent:.1f}s")
        w = self.worker
        if w.stopping:
            return Verdict(True, "stopping")
        if w.running >= w.concurrency:
            return Verdict(True, "every slot is busy")
        idle = now - max(w.fetch_started_at, self.started_at)
        if idle > deadline:
            return Verdict(False, f"the fetch loop has not fetched for {idle:.1f}s")
        return Verdict(True, "fetching")

    def readiness(self) -> Verdict:
        live = self.liveness()
        if not live.ok:
            return live
        w = self.worker
        if w.stopping:
            return Verdict(False, "stopping")
        if w.answered_at == 0.0:
            return Verdict(False, "starting: the backend has not answered yet")
        silent = time.monotonic() - w.answered_at
        if silent > self.config.ready_deadline:
            return Verdict(False, f"the backend has not answered for {silent:.1f}s")
        return Verdict(True, live.reason)


class ChildSlot(Protocol):
    """What ``PoolHealth`` reads of a supervisor's child (``supervisor._Child``)."""

    @property
    def slot(self) -> int: ...

    @property
    def started_at(self) -> float: ...

    @property
    def alive(self) -> bool: ...

    @property
    def pid(self) -> int | None: ...


def child_health_file(directory: Path, slot: int) -> Path:
    return directory / f"worker-{slot}.json"


class PoolHealth:
    """The verdicts on a supervisor's pool, from its children's health files in
    ``directory`` (see the module docstring)."""

    def __init__(
        self, children: Sequence[ChildSlot], directory: Path, config: HealthConfig
    ) -> None:
        self.children = children
        self.directory = directory
        self.config = config

    def beat(self) -> None:
        pass  # the supervisor's own loop is not asyncio; its children beat their own

    def _child(self, child: ChildSlot) -> tuple[bool, bool, str]:
        """(live, ready, reason) of one child. One the supervisor is restarting counts as
        live (restarting is its job) but not ready."""
        if not child.alive:
            return True, False, "restarting"
        path = child_health_file(self.directory, child.slot)
        try:
            fresh = time.time() - path.stat().st_mtime <= self.config.deadline
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            fresh, report = False, None
        # A file left by the slot's previous process (SIGKILLed) does not count.
        if fresh and isinstance(report, dict) and report.get("pid") == child.pid:
            return True, bool(report.get("ready")), str(report.get("reason", ""))
        if time.monotonic() - child.started_at <= self.config.deadline:
            return True, False, "starting"
        return False, False, "its health file is missing or stale"

    def _verdict(self, ready: bool) -> Verdict:
        failing = []
        for child in self.children:
            live, is_ready, reason = self._child(child)
            if not (is_ready if ready else live):
                failing.append(f"worker {child.slot}: {reason}")
        if failing:
            return Verdict(False, "; ".join(failing))
        return Verdict(True, f"{len(self.children)} workers")

    def liveness(self) -> Verdict:
        return self._verdict(ready=False)

    def readiness(self) -> Verdict:
        return self._verdict(ready=True)


class _ProbeHandler(BaseHTTPRequestHandler):
    server: _ProbeServer

    def do_GET(self) -> None:
        judge = self.server.judge
        path = self.path.split("?", 1)[0]
        if path == "/livez":
            body = judge.liveness().body("live", "not live")
        elif path == "/readyz":
            body = judge.readiness().body("ready", "not ready")
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": "try /livez or /readyz"})
            return
        ok = body["status"] in ("live", "ready")
        self._send(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)

    def _send(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("probe %s: " + format, self.client_address[0], *args)


class _ProbeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], judge: Judge) -> None:
        self.judge = judge
        if ":" in address[0]:
            self.address_family = socket.AF_INET6  # --health-host ::
        super().__init__(address, _ProbeHandler)


def write_health_file(path: Path, judge: Judge) -> None:
    """Rewrite ``path`` with both verdicts while live (atomically); remove it when not."""
    live = judge.liveness()
    if not live.ok:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    ready = judge.readiness()
    report = {"live": True, "ready": ready.ok, "reason": ready.reason, "pid": os.getpid()}
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(report) + "\n")
    os.replace(temporary, path)


def _monitor(judge: Judge, config: HealthConfig, stop: threading.Event) -> None:
    """Beat (and keep the health file) until ``stop``; the file is removed at the end."""
    while not stop.is_set():
        judge.beat()
        if config.file is not None:
            try:
                write_health_file(config.file, judge)
            except OSError as exc:
                log.warning("could not write the health file %s: %s", config.file, exc)
        stop.wait(config.beat)
    if config.file is not None:
        with contextlib.suppress(FileNotFoundError):
            config.file.unlink()


def _bind(host: str, port: int, judge: Judge) -> _ProbeServer:
    try:
        return _ProbeServer((host, port), judge)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve the health probes on {host}:{port}: {exc.strerror or exc}"
        ) from exc


@contextlib.contextmanager
def serving(config: HealthConfig, judge: Judge) -> Iterator[None]:
    """Answer the probes ``config`` asks for, from threads of their own, until the end of
    the block. The port is bound before the block starts: a port in use fails at once."""
    if not config.enabled:
        yield
        return
    server = _bind(config.host, config.port, judge) if config.port is not None else None
    stop = threading.Event()
    threads = [threading.Thread(target=_monitor, args=(judge, config, stop), daemon=True)]
    if server is not None:
        threads.append(threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True))
        log.info("health probes on http://%s:%d/livez and /readyz", config.host, config.port)
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if server is not None:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(5)
