"""A project directory with an app module in it, the CLI run in-process, and real workers.

The CLI imports the app module by name (``cli_tasks_<hex>:app``), as ``pigeon`` would from
the user's project; the tests load the same file as a separate module with an App of their
own, on the same SQLite file, to send messages and to look at the backend. Task names are
explicit (``t.add``), so both Apps name the tasks the same way.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result

from pigeon.backends import Backend
from pigeon.cli import cli
from pigeon.errors import TaskError

T = TypeVar("T")

APP_SOURCE = """\
import os
from typing import Any

import pigeon

app = pigeon.App(URL)


@app.task(name="t.add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="t.divide")
def divide(a: float, b: float) -> float:
    return a / b


@app.task(name="t.echo")
async def echo(value: Any) -> Any:
    return value


@app.task(name="t.steps")
async def steps(n: int) -> int:
    for i in range(1, n + 1):
        pigeon.current().progress(i / n, f"step {i}/{n}")
    return n


@app.task(name="t.whoami")
async def whoami() -> int:
    return os.getpid()


@app.task(name="billing.notify")
def notify_billing(to: str) -> str:
    return to


@app.task(name="email.notify")
def notify_email(to: str) -> str:
    return to
"""


def eventually(check: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout}s still waiting for {what} (last: {value!r})")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Project:
    """A directory holding an app module and its SQLite database."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"sqlite:///{root / 'pigeon.db'}"
        self.module_name = f"cli_tasks_{uuid.uuid4().hex[:10]}"
        self.spec = f"{self.module_name}:app"
        path = root / f"{self.module_name}.py"
        path.write_text(f"URL = {self.url!r}\n" + APP_SOURCE)
        # The tests' own copy of the module: an App separate from the one the CLI imports.
        loader = importlib.util.spec_from_file_location(f"{self.module_name}_tests", path)
        assert loader is not None
        assert loader.loader is not None
        self.tasks = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(self.tasks)

    def run(self, body: Callable[[ModuleType], Awaitable[T]]) -> T:
        """Run ``body(tasks)`` with the tests' App open, on a loop of its own."""

        async def go() -> T:
            async with self.tasks.app:
                return await body(self.tasks)

        return asyncio.run(go())

    def backend(self, op: Callable[[Backend], Awaitable[T]]) -> T:
        async def go(tasks: ModuleType) -> T:
            return await op(await tasks.app.open())

        return self.run(go)

    def send(self, make: Callable[[ModuleType], Any]) -> list[str]:
        """Send the promises ``make(tasks)`` returns (one or a list); their ids."""

        async def go(tasks: ModuleType) -> list[str]:
            made = make(tasks)
            promises = made if isinstance(made, list) else [made]
            return [await p.sent() for p in promises]

        return self.run(go)

    def dead_letters(self, count: int) -> list[str]:
        """``count`` messages dead-lettered by a real Worker (divide by zero, no retries)."""
        from pigeon.worker import Worker

        async def go(tasks: ModuleType) -> list[str]:
            promises = [tasks.divide.send(i, 0) for i in range(count)]
            worker = Worker(tasks.app, concurrency=4, heartbeat=60)
            running = asyncio.create_task(worker.run())
            try:
                async with asyncio.timeout(20):
                    outcomes = await asyncio.gather(*promises, return_exceptions=True)
                    assert all(isinstance(o, TaskError) for o in outcomes), outcomes
            finally:
                worker.stop()
                await running
            return [p.id for p in promises]

        return self.run(go)

    def invoke(self, *args: str) -> Result:
        """The CLI, in this process, from the project directory."""
        return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})

    def pigeon(self, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
        """``python -m pigeon ARGS`` as a real process, from the project directory."""
        env = {**os.environ, "COLUMNS": "200"}
        return subprocess.Popen(
            [sys.executable, "-m", "pigeon", *args],
            cwd=self.root,
            env=env,
            **popen,
        )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI puts the cwd on sys.path
    p = Project(tmp_path)
    yield p
    sys.modules.pop(p.module_name, None)


class Processes:
    """Processes a test starts; none outlives it."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.orphans: set[int] = set()  # grandchildren (a supervisor's workers) to kill too

    def add(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        for pid in self.orphans:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.stop_all()
