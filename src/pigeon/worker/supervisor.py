"""Supervising worker processes (``pigeon worker -p N``): start, restart, stop.

The supervisor runs no tasks and opens no backend. It starts N child processes from one
command line, restarts a child that exits while it is not stopping (at once after a clean
recycle, ``--max-tasks``; with a growing backoff after a crash), forwards SIGTERM/SIGINT to
every child, and gives them the grace period (plus a margin) before it SIGKILLs the rest.

Children run in process groups of their own, so that Ctrl-C in a terminal reaches the
supervisor alone and each child receives exactly one forwarded signal, not two (a second
SIGINT makes a worker exit at once). POSIX only.

Exit codes: 0 when stopped by a signal and every child exited 0; 1 when a child had to be
killed or exited non-zero while stopping, or on a fatal error (a child that fails at startup
``MAX_QUICK_FAILURES`` times in a row: restarting it again would not help).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from pigeon.worker.health import HealthConfig, PoolHealth, child_health_file, serving

log = logging.getLogger("pigeon.supervisor")

#: A child that exits non-zero sooner than this after it started failed "at startup".
STARTUP_WINDOW = 3.0
#: Consecutive startup failures of one child after which the supervisor gives up.
MAX_QUICK_FAILURES = 5
#: Restart backoff after a crash: FIRST_BACKOFF, doubling per consecutive crash, up to MAX.
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: Seconds a child gets beyond the grace period before it is killed.
KILL_MARGIN = 5.0

EXIT_OK = 0
EXIT_FAILED = 1

#: The option of ``pigeon worker`` that gives a supervised child its health file.
HEALTH_FILE_OPTION = "--health-file"


def describe_exit(code: int) -> str:
    """``exited with code 3`` / ``killed by SIGKILL``, from a Popen return code."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with code {code}"


class _Child:
    """One slot of the pool: the process running in it now, and its recent failures."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.quick_failures = 0
        self.crashes = 0
        self.restart_at: float | None = None
        self.exit_code: int | None = None
        self.final: int | None = None  # how the process stopped, once asked to stop

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.exit_code is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Supervisor:
    """Keeps ``processes`` copies of ``argv`` running until a signal stops them.

    ``argv`` is the complete command line of one child (for pigeon:
    ``[sys.executable, "-m", "pigeon", "worker", APP, ..., "-p", "1"]``). ``grace`` is the
    children's own grace period; they get ``grace + KILL_MARGIN`` seconds to exit after the
    signal is forwarded. ``on_exit(pid)`` is called once for each child process that has
    exited (the metrics endpoint forgets its live gauges). ``slot_argv(slot)``: arguments
    added to the command line of the child in that slot (its own health file).
    """

    def __init__(
        self,
        argv: Sequence[str],
        processes: int,
        grace: float,
        on_exit: Callable[[int], None] | None = None,
        slot_argv: Callable[[int], Sequence[str]] | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, not {processes}")
        self.argv = list(argv)
        self.grace = grace
        self.on_exit = on_exit
        self.slot_argv = slot_argv
        self.children = [_Child(slot) for slot in range(1, processes + 1)]
        self._signals: list[int] = []
        self._stopping_with: int | None = None
        self._kill_deadline = 0.0
        self._fatal = False

    # the main loop --------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped; returns the exit code. Call from the main thread."""
        with self._signal_wakeups() as wakeup:
            for child in self.children:
                self._start(child)
            while True:
                self._handle_signals()
                self._reap()
                if self._stopping_with is not None and not any(c.alive for c in self.children):
                    break
                if self._stopping_with is not None and time.monotonic() > self._kill_deadline:
                    self._kill_rest()
                    continue
                self._restart_due()
                _wait_readable(wakeup, self._next_timeout())
        return self._exit_code()

    def _exit_code(self) -> int:
        if self._fatal:
            return EXIT_FAILED
        # A child that crashed earlier and was waiting for its restart does not count: its
        # crash was logged and handled; what counts is how the children asked to stop ended.
        bad = [c for c in self.children if c.final not in (None, 0)]
        return EXIT_FAILED if bad else EXIT_OK

    def _next_timeout(self) -> float:
        now = time.monotonic()
        timeout = 1.0
        if self._stopping_with is not None:
            timeout = min(timeout, max(0.0, self._kill_deadline - now))
        for child in self.children:
            if child.restart_at is not None:
                timeout = min(timeout, max(0.0, child.restart_at - now))
        return timeout

    # children -------------------------------------------------------------------------------

    def _start(self, child: _Child) -> None:
        child.restart_at = None
        child.exit_code = None
        child.started_at = time.monotonic()
        # A process group of its own: a terminal's Ctrl-C reaches the supervisor only, which
        # forwards it once (see the module docstring).
        argv = self.argv if self.slot_argv is None else [*self.argv, *self.slot_argv(child.slot)]
        child.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, process_group=0)
        log.info(
            "started worker process %d (slot %d of %d)",
            child.proc.pid,
            child.slot,
            len(self.children),
        )

    def _reap(self) -> None:
        for child in self.children:
            if not child.alive:
                continue
            assert child.proc is not None
            code = child.proc.poll()
            if code is None:
                continue
            child.exit_code = code
            self._exited(child.proc.pid)
            if self._stopping_with is not None:
                # Killed by the very signal we forwarded: it had no handler yet (still
                # starting) or no more (exiting): either way it held no messages. A stop.
                clean = code in (0, -self._stopping_with)
                child.final = 0 if clean else code
                level = logging.INFO if clean else logging.WARNING
                log.log(level, "worker process %d %s", child.proc.pid, describe_exit(code))
                continue
            self._schedule_restart(child, code)

    def _schedule_restart(self, child: _Child, code: int) -> None:
        assert child.proc is not None
        pid = child.proc.pid
        if code == 0:
            # A clean exit we did not ask for: the worker recycled itself (--max-tasks).
            log.info("worker process %d recycled itself; starting a fresh one", pid)
            child.quick_failures = 0
            child.crashes = 0
            child.restart_at = time.monotonic()
            return
        lived = time.monotonic() - child.started_at
        child.quick_failures = child.quick_failures + 1 if lived < STARTUP_WINDOW else 0
        child.crashes = child.crashes + 1 if lived < 60 else 1
        if child.quick_failures >= MAX_QUICK_FAILURES:
            log.error(
                "worker process %d %s; it failed at startup %d times in a row, giving up",
                pid,
                describe_exit(code),
                child.quick_failures,
            )
            self._fatal = True
            self._stop(signal.SIGTERM)
            return
        backoff = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (child.crashes - 1))
        log.warning(
            "worker process %d (slot %d) %s after %.1fs; restarting in %.1fs",
            pid,
            child.slot,
            describe_exit(code),
            lived,
            backoff,
        )
        child.restart_at = time.monotonic() + backoff

    def _restart_due(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None and child.restart_at <= now:
                self._start(child)

    # stopping -------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name
            if self._stopping_with is None:
                log.info(
                    "received %s: stopping %d worker processes (grace %gs)",
                    name,
                    sum(c.alive for c in self.children),
                    self.grace,
                )
                self._stop(signum)
            elif signum == signal.SIGINT:
                # A second Ctrl-C: the user does not want to wait; the workers exit at once.
                log.warning("received SIGINT again: making the workers exit now")
                self._forward(signal.SIGINT)
            else:
                log.info("received %s again: already stopping", name)

    def _stop(self, signum: int) -> None:
        self._stopping_with = signum
        self._kill_deadline = time.monotonic() + self.grace + KILL_MARGIN
        for child in self.children:
            child.restart_at = None
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        for child in self.children:
            if child.alive:
                assert child.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signum)

    def _kill_rest(self) -> None:
        for child in self.children:
            if child.alive:
                assert child.proc is not None
                log.error(
                    "worker process %d did not exit within %gs; killing it",
                    child.proc.pid,
                    self.grace + KILL_MARGIN,
                )
                # The whole group: threads and subprocesses the task started go with it.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
                child.exit_code = child.final = child.proc.returncode
                self._exited(child.proc.pid)

    def _exited(self, pid: int) -> None:
        if self.on_exit is not None:
            try:
                self.on_exit(pid)
            except Exception:
                log.exception("after worker process %d exited", pid)

    # signals --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _signal_wakeups(self) -> Iterator[socket.socket]:
        """Handle SIGTERM/SIGINT/SIGCHLD by waking the main loop through a socket.

        Python runs signal handlers between bytecodes of the main thread; the wakeup fd makes
        a ``select`` in progress return at once instead of at its timeout.
        """
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._signals.append(signum)

        def on_child(signum: int, frame: FrameType | None) -> None:
            pass  # the wakeup byte is the point: a child exited, reap it now

        previous = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, on_signal),
            signal.SIGINT: signal.signal(signal.SIGINT, on_signal),
            signal.SIGCHLD: signal.signal(signal.SIGCHLD, on_child),
        }
        old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        try:
            yield reader
        finally:
            signal.set_wakeup_fd(old_fd)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            reader.close()
            writer.close()


def _wait_readable(sock: socket.socket, timeout: float) -> None:
    ready, _, _ = select.select([sock], [], [], timeout)
    if ready:
        with contextlib.suppress(BlockingIOError):
            while sock.recv(512):
                pass


def supervise(
    argv_for_child: list[str],
    processes: int,
    grace: float,
    on_exit: Callable[[int], None] | None = None,
    health: HealthConfig | None = None,
) -> int:
    """Run ``processes`` children of ``argv_for_child`` until SIGTERM/SIGINT; the exit code.

    ``argv_for_child`` is the full command line of one child. See :class:`Supervisor`.
    ``health``: the probes the supervisor answers for the whole pool (``PoolHealth``): each
    child is given ``--health-file`` in a private directory, and is healthy only while its
    file says so; ``argv_for_child`` must not serve probes of its own.
    """
    if health is None or not health.enabled:
        return Supervisor(argv_for_child, processes, grace, on_exit).run()
    with tempfile.TemporaryDirectory(prefix="pigeon-health-") as name:
        files = Path(name)

        def slot_argv(slot: int) -> list[str]:
            return [HEALTH_FILE_OPTION, str(child_health_file(files, slot))]

        supervisor = Supervisor(argv_for_child, processes, grace, on_exit, slot_argv)
        with serving(health, PoolHealth(supervisor.children, files, health)):
            return supervisor.run()
