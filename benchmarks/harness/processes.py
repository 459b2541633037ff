"""Worker processes: start one, watch its memory, stop it and everything it started.

Peak RSS is sampled, not read from the kernel's high-water mark, because a worker is often a
tree (Celery's prefork children, Dramatiq's and taskiq's supervisor + worker, RQ's work
horses): every ``SAMPLE_SECONDS`` the sampler adds up the resident memory of the worker and
all its descendants, found through ``/proc/<pid>/stat`` (Linux only), and keeps the largest
sum.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from peers.base import WorkerCommand

SAMPLE_SECONDS = 0.1
RESCAN_EVERY = 5  # samples between two scans of /proc for descendants, after the first
EAGER_SAMPLES = 20  # the first samples (while the worker forks its children) always rescan
STOP_GRACE = 20.0
PAGE = os.sysconf("SC_PAGE_SIZE")


class WorkerDied(Exception):
    """The worker process exited while the harness was waiting for it."""


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # The command name is in parentheses and may hold spaces: the ppid follows the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class RssSampler:
    """Samples the RSS of a process tree on a thread of its own until ``stop``."""

    def __init__(self, root: int, include_children: bool = True) -> None:
        self.root = root
        self.include_children = include_children
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int:
        """Stop sampling (after one last sample); returns the peak in bytes."""
        self._stop.set()
        self._thread.join()
        pids = descendants(self.root) if self.include_children else [self.root]
        self.peak = max(self.peak, sum(resident_bytes(pid) for pid in pids))
        return self.peak

    def _run(self) -> None:
        pids = [self.root]
        tick = 0
        while True:
            if self.include_children and (tick < EAGER_SAMPLES or tick % RESCAN_EVERY == 0):
                pids = descendants(self.root)
            self.peak = max(self.peak, sum(resident_bytes(pid) for pid in pids))
            tick += 1
            if self._stop.wait(SAMPLE_SECONDS):
                return


class WorkerProcess:
    """One worker, started in a session (process group) of its own.

    Its output goes to ``log``; ``stop`` sends SIGTERM to the worker (as an orchestrator
    would: the worker stops its own children), waits up to STOP_GRACE seconds for it, then
    SIGKILLs what is left of its group, so that no child outlives the benchmark.
    """

    def __init__(
        self, command: WorkerCommand, env: Mapping[str, str], cwd: Path, log: Path
    ) -> None:
        self.command = command
        self.log = log
        self.started = 0.0
        self.peak_rss = 0
        self._env = {**os.environ, **env, **command.env}
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._sampler: RssSampler | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self._proc = subprocess.Popen(
                list(self.command.argv),
                env=self._env,
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.perf_counter()
        self._sampler = RssSampler(self._proc.pid)
        self._sampler.start()

    def check(self) -> None:
        """Raise WorkerDied (with the end of its log) if the worker has exited."""
        assert self._proc is not None
        code = self._proc.poll()
        if code is not None:
            raise WorkerDied(f"the worker exited with code {code}: {self.tail()}")

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._sampler is not None:
            self.peak_rss = self._sampler.stop()
        pgid = self._proc.pid  # start_new_session: the group id is the worker's pid
        self._proc.terminate()
        try:
            self._proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            pass
        # Whatever is left of the group (children that ignored SIGTERM) is killed.
        _signal_group(pgid, signal.SIGKILL)
        self._proc.wait()
        self._proc = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
