"""The dashboard's pages and actions against a real App on SQLite and memory: what the
backend holds is what the pages show, and the actions change it."""

from __future__ import annotations

import re

import pigeon
from pigeon.message import WorkerInfo

from .conftest import Dashboard, send_dead


async def test_overview_shows_every_queue_with_its_depth_by_state(dashboard: Dashboard) -> None:
    for n in range(3):
        await dashboard.app.tasks["dash.work"].send(n).sent()
    await dashboard.app.tasks["dash.leak"].send("x", pigeon.Secret("s")).sent()
    await dashboard.backend.fetch(["work"], 1, "w1")
    page = await dashboard.client.get("/")
    assert page.status_code == 200
    row = re.search(r"<tr>\s*<td>work</td>(.*?)</tr>", page.text, re.S)
    assert row is not None, page.text
    cells = re.findall(r'<td class="num (\w+)">([\d,]+)</td>', row.group(1))
    assert dict(cells) == {"waiting": "0", "scheduled": "0", "pending": "2", "leased": "1",
                           "dead": "0"}  # fmt: skip
    assert "<td>default</td>" in page.text
    assert "0 live workers" in page.text


async def test_pause_then_resume_through_the_actions_changes_the_backends_pauses(
    dashboard: Dashboard,
) -> None:
    await dashboard.app.tasks["dash.work"].send(1).sent()
    answer = await dashboard.post("/pause", {"queue": "work", "reason": "deploy", "for": "10m"})
    assert answer.status_code == 303
    paused = await dashboard.backend.paused()
    assert paused["work"].reason == "deploy"
    assert paused["work"].until is not None
    page = await dashboard.client.get("/")
    assert "deploy" in page.text
    assert 'action="/resume"' in page.text
    answer = await dashboard.post("/resume", {"queue": "work"})
    assert answer.status_code == 303
    assert await dashboard.backend.paused() == {}


async def test_a_pause_of_a_bad_duration_is_refused_with_the_reason(
    dashboard: Dashboard,
) -> None:
    answer = await dashboard.post("/pause", {"queue": "work", "for": "soon"})
    assert answer.status_code == 400
    assert "not a duration" in answer.text
    assert await dashboard.backend.paused() == {}


async def test_a_dead_letter_is_requeued_through_the_action(dashboard: Dashboard) -> None:
    mid = await send_dead(dashboard.app, "text", "boom")
    page = await dashboard.client.get("/dead")
    assert mid in page.text
    assert "ValueError: boom" in page.text
    answer = await dashboard.post("/dead", {"id": mid, "action": "requeue"})
    assert answer.status_code == 303
    assert await dashboard.backend.dead_letters() == []
    info = await dashboard.backend.inspect(mid)
    assert info is not None
    assert info.state == "pending"


async def test_a_dead_letter_is_purged_through_the_action(dashboard: Dashboard) -> None:
    mid = await send_dead(dashboard.app, "text", "boom")
    kept = await send_dead(dashboard.app, "other", "boom")
    answer = await dashboard.post("/dead", {"id": mid, "action": "purge"})
    assert answer.status_code == 303
    assert [d.id for d in await dashboard.backend.dead_letters()] == [kept]


async def test_the_detail_page_escapes_arguments_and_errors_and_hides_secrets(
    dashboard: Dashboard,
) -> None:
    script = "<script>alert(1)</script>"
    mid = await send_dead(dashboard.app, script, f"bad {script}", f"Traceback\n  {script}\n")
    for path in (f"/messages/{mid}", "/dead"):
        page = await dashboard.client.get(path)
        assert page.status_code == 200
        assert "<script>alert" not in page.text
        assert "&lt;script&gt;" in page.text
    detail = (await dashboard.client.get(f"/messages/{mid}")).text
    assert "hunter2" not in detail
    assert "***" in detail
    assert 'class="traceback"' in detail


async def test_an_unknown_message_is_404(dashboard: Dashboard) -> None:
    page = await dashboard.client.get("/messages/nope")
    assert page.status_code == 404
    found = await dashboard.client.get("/messages", params={"id": "nope"}, follow_redirects=True)
    assert found.status_code == 404  # redirected to its detail


async def test_workers_page_flags_a_worker_that_runs_nothing_while_its_queue_has_due_work(
    dashboard: Dashboard,
) -> None:
    await dashboard.app.tasks["dash.work"].send(1).sent()
    now = await dashboard.backend.time()
    idle = WorkerInfo("w-idle", "host-a", 11, ["work"], 4, started_at=now - 600)
    busy = WorkerInfo("w-busy", "host-b", 12, ["work"], 4, running=4, started_at=now - 600)
    new = WorkerInfo("w-new", "host-c", 13, ["work"], 4, started_at=now - 1)
    # With the ages a heartbeat carries: fetched work 2s before it, or last 5 minutes before
    # (one long task still running, three slots free): the second is stuck.
    fed = WorkerInfo("w-fed", "h", 14, ["work"], 4, started_at=now - 600, fetch_age=0.5, work_age=2)
    stuck = WorkerInfo(
        "w-stuck",
        "h",
        15,
        ["work"],
        4,
        running=1,
        started_at=now - 600,
        fetch_age=290,
        work_age=300,
    )
    for info in (idle, busy, new, fed, stuck):
        await dashboard.backend.heartbeat(info, ttl=60)
    page = (await dashboard.client.get("/workers")).text
    rows = {
        m.group(1): "stalled</span>" in m.group(0)
        for m in re.finditer(r"<tr[^>]*>\s*<td>(w-\w+)</td>.*?</tr>", page, re.S)
    }
    assert rows == {
        "w-idle": True,
        "w-busy": False,
        "w-new": False,
        "w-fed": False,
        "w-stuck": True,
    }
    assert "4/4" in page
    stuck_row = re.search(r"<tr[^>]*>\s*<td>w-stuck</td>.*?</tr>", page, re.S)
    assert stuck_row is not None
    assert "4m50s ago" in stuck_row.group(0)  # its last fetch
    assert "5m00s ago" in stuck_row.group(0)  # its last work
    overview = (await dashboard.client.get("/")).text
    assert "2 stalled" in overview
    await dashboard.backend.pause("work")
    page = (await dashboard.client.get("/workers")).text
    assert "stalled</span>" not in page  # a paused queue is not consumed on purpose


async def test_static_files_are_served_from_the_package(dashboard: Dashboard) -> None:
    css = await dashboard.client.get("/static/dashboard.css")
    js = await dashboard.client.get("/static/dashboard.js")
    assert css.status_code == js.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
