"""The overview's charts, from the backend's event log: outcomes and failures per minute,
queue wait and run time percentiles; and the log read from its oldest event on every
backend."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pigeon.backends import from_url
from pigeon.dashboard.charts import percentile, read_log, summarize
from pigeon.message import Event
from tests.servers import BACKEND_URLS, cleanup, make_url, require_server, scheme_of

from .conftest import Dashboard


def life(mid: str, sent: float, wait: float, run: float, kind: str = "succeeded") -> list[Event]:
    """The events of one message: sent, started after ``wait``, ended after ``run``."""
    return [
        Event("sent", mid, "dash.work", "work", sent),
        Event("started", mid, "dash.work", "work", sent + wait, 1, "w1"),
        Event(kind, mid, "dash.work", "work", sent + wait + run, 1, "w1"),  # type: ignore[arg-type]
    ]


async def test_the_overview_draws_outcomes_per_minute_and_timings(dashboard: Dashboard) -> None:
    now = await dashboard.backend.time()
    events: list[Event] = []
    for n in range(10):
        events += life(f"ok-{n}", now - 300, 0.1 * (n + 1), 1.0)
    events += life("bad", now - 120, 0.5, 2.0, "failed")
    events += life("older", now - 7200, 0.5, 2.0)  # before the hour: not drawn
    await dashboard.backend.publish(events)
    page = (await dashboard.client.get("/")).text
    assert 'id="charts"' in page
    assert "(10 and 1)" in page  # succeeded and failed attempts within the hour
    assert page.count('<rect class="bar"') == 2  # two minutes had outcomes
    timings = re.search(r'<table class="detail" id="timings">.*?</table>', page, re.S)
    assert timings is not None
    assert '<td class="num">0.5s</td>' in timings.group(0)  # queue wait p50 of 0.1..1.0, 0.5
    assert '<td class="num">1.0s</td>' in timings.group(0)  # run time p50
    assert "<script" not in page.split("</head>", 1)[1]  # the SVG is drawn on the server


async def test_without_events_the_overview_says_how_to_turn_them_on(dashboard: Dashboard) -> None:
    page = (await dashboard.client.get("/")).text
    assert 'id="no-events"' in page
    assert "PIGEON_EVENTS=1" in page


def test_summary_puts_each_outcome_in_its_minute_and_counts_failed_attempts() -> None:
    now = 10_000.0
    events = life("a", now - 59.5 * 60, 1, 1) + life("b", now - 30, 1, 1, "retried")
    events += life("c", now - 30, 1, 3, "dead")
    summary = summarize(list(reversed(events)), now)  # any order
    assert summary.succeeded[0] == 1
    assert summary.failed[-1] == 2
    assert summary.run.count == 3
    assert summary.run_p95[-1] == 3
    assert summary.wait.p50 == 1


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile([3.0], 95) == 3


@pytest.mark.parametrize("template", BACKEND_URLS, ids=scheme_of)
async def test_the_log_is_read_from_its_oldest_event_on_every_backend(
    template: str, tmp_path: Path
) -> None:
    url = make_url(template, tmp_path)
    require_server(url)
    backend = from_url(url)
    await backend.open()
    try:
        first = [Event("sent", f"m{n}", "t", "q", float(n)) for n in range(1500)]
        await backend.publish(first)
        await backend.publish([Event("succeeded", "last", "t", "q", 2000.0)])
        events = await read_log(backend)
        assert [e.id for e in events] == [e.id for e in first] + ["last"]
    finally:
        await backend.close()
        await cleanup(url)
