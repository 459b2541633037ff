"""What the broker-fault tests share: sending through faults with the same message id,
awaiting every promise while the faults happen, keeping worker processes running, draining,
and reporting the checker's verdict.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pigeon
from pigeon.errors import BackendError
from pigeon.message import Message, Result
from tests.chaos.jepsen import TABLES, History, Verdict
from tests.processes import Workers, eventually

#: How long one message may take to be acknowledged, faults included.
SEND_DEADLINE = 30.0


@dataclass
class Sender:
    """Sends messages of one task from sync code, each until it is acknowledged.

    The first try is ``App.send_message``, exactly what ``task.send(...)`` does from sync
    code. When it raises (the backend gave up on a dropped connection) the same Message, with
    the same id, is sent again through ``App.enqueue`` until the backend acknowledges it: the
    contract says an id already stored is not stored twice, so a send that did reach the
    store before its connection dropped must not be stored (or run) twice.

    A transient broker failure is documented to raise ``BackendError``; any other exception
    is recorded in ``leaked`` (the test fails on it) and the message re-sent all the same, so
    that the rest of the run is still checked.
    """

    app: pigeon.App
    task: str
    acknowledged: list[str] = field(default_factory=list)
    raised: list[str] = field(default_factory=list)  # "ExcType: message" per failed try
    resent: set[str] = field(default_factory=set)  # ids acknowledged only by a re-send
    # ids found already stored when re-sent: the send that raised had reached the store
    in_doubt_stored: set[str] = field(default_factory=set)
    leaked: list[str] = field(default_factory=list)  # failures that were not BackendError

    def send(self, *args: Any) -> str:
        task = self.app.tasks[self.task]
        message = task.message(args, {})
        try:
            mid = self.app.send_message(message, task).id
        except Exception as exc:
            self._failed(exc)
            eventually(lambda: self._resend(message), f"{message.id} to be stored", SEND_DEADLINE)
            mid = message.id
        assert mid == message.id, f"sent {message.id}, acknowledged as {mid}"
        self.acknowledged.append(mid)
        return mid

    def _resend(self, message: Message) -> bool:
        try:
            if message.id not in self.resent:
                known = self.app.backend_call_sync(lambda b: b.inspect(message.id), SEND_DEADLINE)
                if known is not None:
                    self.in_doubt_stored.add(message.id)
                self.resent.add(message.id)
            ids = self.app.call_sync(self.app.enqueue([message]), timeout=SEND_DEADLINE)
        except Exception as exc:
            self._failed(exc)
            return False
        assert ids == [message.id], f"re-sent {message.id}, acknowledged as {ids}"
        return True

    def notes(self) -> list[str]:
        """What the sends went through, for the run's table."""
        kinds = sorted({line.split(":", 1)[0] for line in self.raised})
        return [
            f"sends that raised, re-sent with the same id: {len(self.resent)}"
            f" ({len(self.raised)} failed tries: {', '.join(kinds) or '-'}),"
            f" already stored when re-sent: {len(self.in_doubt_stored)}",
            f"sends that raised something other than BackendError: {len(self.leaked)}",
            *(f"  {line}" for line in sorted(set(self.leaked))[:3]),
        ]

    def _failed(self, exc: Exception) -> None:
        kind = type(exc)
        self.raised.append(f"{kind.__name__}: {exc}")
        if not isinstance(exc, BackendError):
            self.leaked.append(f"{kind.__module__}.{kind.__qualname__}: {exc}")


class Awaiter:
    """A thread that awaits each acknowledged message's promise in turn, so that waits
    (and the backend's notifications) go through the faults too."""

    def __init__(self, app: pigeon.App, timeout: float = 60.0) -> None:
        self.app = app
        self.timeout = timeout
        self.values: dict[str, Any] = {}
        self.errors: list[str] = []
        self._ids: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="awaiter", daemon=True)
        self._thread.start()

    def add(self, mid: str) -> None:
        self._ids.put(mid)

    def finish(self, timeout: float) -> None:
        """Wait until every promise added so far has resolved (or failed)."""
        self._ids.put(None)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"promises still unresolved after {timeout}s"

    def _run(self) -> None:
        while True:
            try:
                mid = self._ids.get(timeout=self.timeout)
            except queue.Empty:
                return  # the test ended without finish(): it has failed already
            if mid is None:
                return
            try:
                self.values[mid] = self.app.promise(mid).result(timeout=self.timeout)
            except Exception as exc:
                self.errors.append(f"{mid}: {type(exc).__name__}: {exc}")


@dataclass
class Crew:
    """Worker processes kept at full strength: one found dead is recorded and replaced."""

    workers: Workers
    args: tuple[str, ...]
    logs: Path
    procs: list[Any] = field(default_factory=list)
    deaths: list[str] = field(default_factory=list)  # "pid N exited with R"

    def start(self, n: int) -> None:
        for _ in range(n):
            self._spawn()

    def _spawn(self) -> None:
        log = self.logs / f"worker-{len(self.workers.procs)}.log"
        self.procs.append(self.workers.start(*self.args, log=log))

    def replace_dead(self) -> None:
        for proc in list(self.procs):
            if proc.poll() is not None:
                self.deaths.append(f"pid {proc.pid} exited with {proc.returncode}")
                self.procs.remove(proc)
                self._spawn()

    def log_tail(self, lines: int = 20) -> str:
        text = []
        for path in sorted(self.logs.glob("worker-*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            text.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(text)


def settled(
    app: pigeon.App, ids: list[str], timeout: float, keep_up: Callable[[], None] = lambda: None
) -> dict[str, Result]:
    """Every outcome of ``ids``, once all are stored (``keep_up`` runs at each look)."""

    def outcomes() -> dict[str, Result]:
        keep_up()
        return app.backend_call_sync(lambda b: b.results(ids), timeout=10)

    eventually(lambda: len(outcomes()) == len(ids), "every message to settle", timeout, 0.1)
    return outcomes()


def report(verdict: Verdict, title: str, notes: Sequence[str] = ()) -> None:
    """Add the run's table (and notes) to the session's summary; fail on what must not be."""
    TABLES.append("\n".join([verdict.table(title), *(f"  {n}" for n in notes)]))
    assert not verdict.lost, f"lost: {verdict.lost[:5]}"
    assert not verdict.unexpected, f"unexpected: {verdict.unexpected[:5]}"
    assert not verdict.stale, f"stale: {verdict.stale[:5]}"


def stored_twice(history: History) -> list[str]:
    """Ids that ran twice as the same attempt. Every fetch counts a new attempt, so this
    only happens when a message was stored again (from attempt 1) after it had settled."""
    return sorted(
        mid for mid, attempts in history.starts.items() if len(set(attempts)) < len(attempts)
    )


def elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.1f}s"
