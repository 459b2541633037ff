"""Real worker processes for the end-to-end and fault-injection suites, and waiting on a
condition with a deadline (never a blind sleep)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def eventually(
    check: Callable[[], T], what: str, timeout: float = 20.0, interval: float = 0.02
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout}s still waiting for {what} (last: {value!r})")
        time.sleep(interval)


class Workers:
    """Starts ``pigeon worker APP`` processes on one URL; none outlives the test."""

    def __init__(self, url: str, app: str, env: dict[str, str] | None = None) -> None:
        self.url = url
        self.app = app
        self.env = env or {}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``pigeon worker APP ARGS``; its stderr (the log) goes to ``log`` if given."""
        env = {**os.environ, **self.env, "PIGEON_URL": self.url, "PYTHONPATH": str(ROOT)}
        with contextlib.ExitStack() as stack:
            stderr = stack.enter_context(log.open("ab")) if log is not None else None
            proc = subprocess.Popen(
                [sys.executable, "-m", "pigeon", "worker", self.app, *args],
                cwd=ROOT,
                env=env,
                stderr=stderr,
            )
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait(10)
