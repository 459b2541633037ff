"""The Periodic and Limits pages against a real App on SQLite and memory: what the backend
holds of the schedules (their marks, their ticks' messages) and of the limited tasks."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

import pigeon
from pigeon.dashboard import app as dashboard_app
from pigeon.dashboard.pages import last_tick
from pigeon.scheduler import Timing

from .conftest import Dashboard, client_for


def limited_app(url: str) -> pigeon.App:
    app = pigeon.App(url)

    @app.periodic(every=timedelta(minutes=1), name="dash.minutely", queue="ticks")
    def minutely() -> None:
        return None

    @app.periodic(cron="0 3 * * *", tz="Europe/Paris", name="dash.nightly")
    def nightly() -> None:
        return None

    @app.task(name="dash.limited", queue="slow", rate="10/s", burst=2, limit=2)
    async def limited(n: int) -> int:
        return n

    @app.task(name="dash.per_user", limit=1, limit_key=lambda user: user)
    async def per_user(user: str) -> None:
        return None

    return app


@pytest.fixture
async def limited(url: str) -> AsyncIterator[Dashboard]:
    app = limited_app(url)
    await app.open()
    try:
        async with client_for(dashboard_app(app)) as client:
            yield Dashboard(app, client)
    finally:
        await app.close()


def row_of(page: str, name: str) -> str:
    found = re.search(rf"<tr[^>]*>\s*<td>{re.escape(name)}</td>.*?</tr>", page, re.S)
    assert found is not None, page
    return found.group(0)


async def test_the_periodic_page_shows_each_schedule_its_last_tick_and_next(
    limited: Dashboard,
) -> None:
    app, backend = limited.app, limited.backend
    now = await backend.time()
    schedule = app.schedules["dash.minutely"]
    tick = last_tick(schedule.timing, now)
    assert tick is not None
    [mid] = await backend.enqueue([schedule.message(tick)])
    await backend.mark_schedules({"dash.minutely": now, "dash.nightly": now})
    page = (await limited.client.get("/periodic")).text
    row = row_of(page, "dash.minutely")
    assert "every 60s" in row
    assert f'href="/messages/{mid}"' in row
    assert ">pending</a>" in row
    assert "ago)" in row  # its last tick
    assert "UTC (in " in row  # its next
    assert "Europe/Paris" in row_of(page, "dash.nightly")
    assert "a worker leads" in page
    assert "pigeon.scheduler." in page  # the lock's name


async def test_a_schedule_whose_ticks_are_not_sent_shows_that_no_worker_leads(
    limited: Dashboard,
) -> None:
    now = await limited.backend.time()
    await limited.backend.mark_schedules({"dash.minutely": now - 600})
    page = (await limited.client.get("/periodic")).text
    assert "no worker leads" in page
    assert "overdue since" in row_of(page, "dash.minutely")
    assert "never (no scheduler ran it yet)" in row_of(page, "dash.nightly")


@pytest.mark.parametrize(
    ("timing", "moment", "expected"),
    [
        (Timing(every=60), 125.0, 120.0),
        (Timing(every=60), 120.0, 120.0),
        (Timing(cron="0 * * * *"), 7200.0, 7200.0),
        (Timing(cron="0 * * * *"), 7199.0, 3600.0),
    ],
)
def test_last_tick_is_the_latest_at_or_before_the_moment(
    timing: Timing, moment: float, expected: float
) -> None:
    assert last_tick(timing, moment) == expected


async def test_the_limits_page_shows_each_limited_task_and_its_running_messages(
    limited: Dashboard,
) -> None:
    for n in range(3):
        await limited.app.tasks["dash.limited"].send(n).sent()
    await limited.backend.fetch(["slow"], 2, "w1")
    page = (await limited.client.get("/limits")).text
    row = row_of(page, "dash.limited")
    assert "10/s, burst 2" in row
    assert "2 / 2" in row
    per_user = row_of(page, "dash.per_user")
    assert "<td>key</td>" in per_user
    assert "offers no read of them" in page
    assert "dash.minutely" not in page  # no limits


async def test_pages_of_an_app_without_schedules_or_limits_say_so(dashboard: Dashboard) -> None:
    assert "has no periodic tasks" in (await dashboard.client.get("/periodic")).text
    assert "has a rate or concurrency limit" in (await dashboard.client.get("/limits")).text
