"""Real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, through selenium)
on a real ``pigeon dashboard`` process, with real worker processes on the same URL.

Without chromium, chromedriver or selenium the tests skip with a one-line reason, except
under ``CI=true``, where they fail (``.ci/run`` installs the browser where it is missing).
``PIGEON_DASHBOARD_SCREENSHOTS=DIR`` saves a screenshot of each page into DIR (the README's
``docs/dashboard/*.png`` are made so).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ROOT, Workers

APP = "tests.dashboard.e2e.app:app"
SCREENSHOTS_ENV = "PIGEON_DASHBOARD_SCREENSHOTS"


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in {"true", "1"}:
        pytest.fail(reason)
    pytest.skip(reason)


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        _missing(
            "chromium or chromedriver not installed (apt-get install chromium chromium-driver)"
        )
    assert chromium is not None
    assert driver is not None
    return chromium, driver


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session (each test opens its own dashboard)."""
    chromium, driver = _browser_paths()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(flag)
    driver_ = webdriver.Chrome(service=Service(driver), options=options)
    driver_.set_page_load_timeout(30)
    try:
        yield driver_
    finally:
        driver_.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A ``pigeon dashboard`` process on ``url`` and its address."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.port = free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PIGEON_URL": url, "PIGEON_EVENTS": "1", "PYTHONPATH": str(ROOT)}
        env.pop("PIGEON_DASHBOARD_TOKEN", None)
        with log.open("ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pigeon", "dashboard", APP, "--port", str(self.port)],
                cwd=ROOT,
                env=env,
                stderr=stderr,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the dashboard did not start: {log.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def served(shared_url: str, tmp_path: Path) -> Iterator[Served]:
    served = Served(shared_url, tmp_path / "dashboard.log")
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def workers(shared_url: str) -> Iterator[Workers]:
    workers = Workers(shared_url, APP, {"PIGEON_EVENTS": "1"})
    try:
        yield workers
    finally:
        workers.stop_all()


@pytest.fixture
def screenshots(shared_url: str) -> Path | None:
    """Where to save screenshots (the SQLite run only: one set is enough), or None."""
    target = os.environ.get(SCREENSHOTS_ENV)
    if not target or not shared_url.startswith("sqlite"):
        return None
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    return path
