"""The dashboard's ``/metrics``: the queue gauges of ``Backend.stats`` and the workers by
their heartbeats, in the Prometheus text format (read back with prometheus-client's own
parser), behind the dashboard's token rules, and a 404 that says why without
prometheus-client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import pigeon
from pigeon.dashboard import app as dashboard_app
from pigeon.dashboard.metrics import MISSING
from pigeon.message import WorkerInfo
from tests.processes import ROOT, eventually

from .conftest import Dashboard, client_for, make_app, send_dead

prometheus_client = pytest.importorskip("prometheus_client")
parser = pytest.importorskip("prometheus_client.parser")

TOKEN = "metrics-token-for-tests"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    found: Samples = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            found[s.name, tuple(sorted(s.labels.items()))] = s.value
    return found


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


async def fill(app: pigeon.App) -> None:
    """Two pending messages on ``work``, one dead letter on ``default``, ``work`` paused,
    and two live workers (one consuming both queues)."""
    work = app.tasks["dash.work"]
    for n in range(2):
        await work.send(n).sent()
    await send_dead(app, "x", "boom")
    await app.backend.pause("work", "maintenance", None)
    for pid, queues, running in ((1, ["work"], 1), (2, ["work", "default"], 0)):
        info = WorkerInfo(f"w{pid}", "host", pid, queues, concurrency=4, running=running)
        await app.backend.heartbeat(info, ttl=60)


def check(found: Samples) -> None:
    assert value(found, "pigeon_queue_depth", queue="work", state="pending") == 2
    assert value(found, "pigeon_queue_depth", queue="work", state="leased") == 0
    assert value(found, "pigeon_dead_letters", queue="default") == 1
    assert value(found, "pigeon_queue_paused", queue="work") == 1
    assert value(found, "pigeon_queue_paused", queue="default") == 0
    assert value(found, "pigeon_workers", queue="work") == 2
    assert value(found, "pigeon_workers", queue="default") == 1
    assert value(found, "pigeon_workers_running") == 1
    assert value(found, "pigeon_workers_concurrency") == 8


async def test_metrics_expose_the_queue_gauges_and_the_live_workers(dashboard: Dashboard) -> None:
    await fill(dashboard.app)
    answer = await dashboard.client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == prometheus_client.CONTENT_TYPE_LATEST
    check(samples(answer.text))
    # a worker's own series are the workers' to serve, not the dashboard's
    assert "pigeon_worker_up" not in answer.text
    assert "pigeon_messages_total" not in answer.text


async def test_metrics_follow_the_token_rules_of_the_pages(pigeon_app: pigeon.App) -> None:
    async with client_for(dashboard_app(pigeon_app), client="10.1.2.3") as remote:
        assert (await remote.get("/metrics")).status_code == 401
    async with client_for(dashboard_app(pigeon_app)) as local:
        assert (await local.get("/metrics")).status_code == 200
    async with client_for(dashboard_app(pigeon_app, token=TOKEN), client="10.1.2.3") as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = {"Authorization": "Bearer not-it"}
        assert (await client.get("/metrics", headers=wrong)).status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        answer = await client.get("/metrics", headers=bearer)
        assert answer.status_code == 200
        assert "pigeon_queue_depth" in answer.text


async def test_without_prometheus_client_metrics_is_a_404_that_says_why(
    dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import raises ImportError
    answer = await dashboard.client.get("/metrics")
    assert answer.status_code == 404
    assert answer.text.strip() == MISSING
    assert "pip install 'pigeon[metrics]'" in MISSING
    assert (await dashboard.client.get("/")).status_code == 200  # the pages are unaffected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``pigeon dashboard`` on a SQLite file, served by uvicorn with a token: (url, base)."""
    url = f"sqlite:///{tmp_path / 'served.db'}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PIGEON_DASHBOARD_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pigeon", "dashboard", "--url", url, "--port", str(port),
         "--token", TOKEN],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield url, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/metrics", timeout=2).status_code == 401
    except httpx.TransportError:
        return False


async def test_a_served_dashboard_is_scraped_over_http_with_its_token(
    served: tuple[str, str],
) -> None:
    url, base = served
    app = make_app(url)
    await app.open()
    try:
        await fill(app)
    finally:
        await app.close()
    eventually(lambda: up(base), "the dashboard to listen", timeout=30)
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/metrics")).status_code == 401
        answer = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    check(samples(answer.text))
