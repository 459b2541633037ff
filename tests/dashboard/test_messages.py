"""The Messages page: the backend's listing behind filters and cursor links, and bulk
actions (a dry-run count first, then the action, recorded as events) on the rows selected
or on everything the filter matches; hidden and refused in read-only mode, and every text
of a message escaped."""

from __future__ import annotations

import html
import re

import pytest

import pigeon
from pigeon.dashboard import app as dashboard_app
from pigeon.dashboard import messages
from pigeon.message import Failure, Outcome

from .conftest import Dashboard, client_for, send_dead


def listed(page: str) -> list[str]:
    """The ids of the rows of a Messages page, in order."""
    return re.findall(r'<a href="/messages/([^"]+)"><code>', page)


async def send_work(dashboard: Dashboard, n: int) -> list[str]:
    ids = []
    for i in range(n):
        promise = dashboard.app.tasks["dash.work"].send(i)
        await promise.sent()
        ids.append(promise.id)
    return ids


async def test_the_list_shows_messages_newest_first_linking_to_their_detail(
    dashboard: Dashboard,
) -> None:
    ids = await send_work(dashboard, 3)
    dead = await send_dead(dashboard.app, "text", "boom")
    page = await dashboard.client.get("/messages")
    assert page.status_code == 200
    assert listed(page.text) == sorted([*ids, dead], reverse=True)
    assert "ValueError" in page.text
    assert "fire()" in page.text  # says that fire-and-forget messages keep no history
    detail = await dashboard.client.get(f"/messages/{dead}")
    assert detail.status_code == 200


async def test_filters_narrow_the_list(dashboard: Dashboard) -> None:
    ids = await send_work(dashboard, 2)
    dead = await send_dead(dashboard.app, "text", "boom")

    async def rows(**params: str) -> list[str]:
        page = await dashboard.client.get("/messages", params=params)
        assert page.status_code == 200, page.text
        return listed(page.text)

    assert await rows(queue="work") == sorted(ids, reverse=True)
    assert await rows(task="dash.leak") == [dead]
    assert await rows(state="dead") == [dead]
    assert await rows(error="ValueError") == [dead]
    assert await rows(prefix=ids[0]) == [ids[0]]
    assert await rows(since="1h") == sorted([*ids, dead], reverse=True)
    assert await rows(until="2000-01-01") == []
    assert await rows(state="succeeded") == []
    page = await dashboard.client.get("/messages", params={"state": "dead"})
    assert '<option value="dead" selected>' in page.text


async def test_a_wrong_filter_is_refused_with_the_reason(dashboard: Dashboard) -> None:
    page = await dashboard.client.get("/messages", params={"since": "soonish"})
    assert page.status_code == 400
    assert "not a time" in page.text
    page = await dashboard.client.get("/messages", params={"state": "<b>x</b>"})
    assert page.status_code == 400
    assert "<b>x</b>" not in page.text


async def test_the_older_link_pages_through_every_message_once(dashboard: Dashboard) -> None:
    ids = await send_work(dashboard, 120)
    seen: list[str] = []
    path: str | None = "/messages?queue=work"
    pages = 0
    while path is not None:
        page = await dashboard.client.get(path)
        assert page.status_code == 200
        seen.extend(listed(page.text))
        found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        path = html.unescape(found.group(1)) if found else None
        pages += 1
    assert seen == sorted(ids, reverse=True)
    assert pages == 3
    assert "queue=work" in (await dashboard.client.get("/messages?queue=work")).text


async def test_the_header_box_still_goes_to_a_message(dashboard: Dashboard) -> None:
    [mid] = await send_work(dashboard, 1)
    found = await dashboard.client.get("/messages", params={"id": mid})
    assert found.status_code == 303
    assert found.headers["location"] == f"/messages/{mid}"


async def test_cancel_all_that_match_counts_first_then_cancels_and_records_events(
    dashboard: Dashboard,
) -> None:
    ids = await send_work(dashboard, 5)
    await send_work_elsewhere(dashboard)
    cursor, _ = await dashboard.backend.read_events(None)

    preview = await dashboard.post("/messages", {"bulk": "cancel:all", "queue": "work"})
    assert preview.status_code == 200
    assert "Cancel 5 messages" in preview.text
    assert (await dashboard.backend.stats()).queues["work"].pending == 5  # a dry run

    done = await dashboard.post(
        "/messages", {"bulk": "cancel:all", "queue": "work", "step": "confirm"}
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith("/messages?queue=work")
    results = await dashboard.backend.results(ids)
    assert {r.state for r in results.values()} == {"cancelled"}
    assert len(results) == 5
    assert (await dashboard.backend.stats()).queues["default"].pending == 1  # not matched
    _, events = await dashboard.backend.read_events(cursor)
    assert sorted(e.id for e in events if e.kind == "cancelled") == sorted(ids)
    assert {e.worker for e in events} == {"dashboard"}
    notice = await dashboard.client.get(done.headers["location"])
    assert "Cancelled 5 messages" in notice.text


async def send_work_elsewhere(dashboard: Dashboard) -> str:
    promise = dashboard.app.tasks["dash.leak"].send("other", pigeon.Secret("s"))
    await promise.sent()
    return promise.id


async def test_retry_of_selected_dead_letters_requeues_them(dashboard: Dashboard) -> None:
    first = await send_dead(dashboard.app, "a", "boom")
    second = await send_dead(dashboard.app, "b", "boom")
    preview = await dashboard.post("/messages", {"bulk": "retry:selected", "id": first})
    assert preview.status_code == 200
    assert "the 1 selected message" in preview.text
    assert f'name="id" value="{first}"' in preview.text
    assert 'value="retry:selected"' in preview.text
    done = await dashboard.post(
        "/messages", {"bulk": "retry:selected", "id": first, "step": "confirm"}
    )
    assert done.status_code == 303
    requeued, left = await dashboard.backend.inspect(first), await dashboard.backend.inspect(second)
    assert requeued is not None
    assert requeued.state == "pending"
    assert left is not None
    assert left.state == "dead"


async def test_purge_all_dead_letters_that_match(dashboard: Dashboard) -> None:
    dead = [await send_dead(dashboard.app, str(n), "boom") for n in range(3)]
    await send_work(dashboard, 2)  # live: purge leaves them alone
    preview = await dashboard.post("/messages", {"bulk": "purge:all"})
    assert "Purge 3 messages" in preview.text
    await dashboard.post("/messages", {"bulk": "purge:all", "step": "confirm"})
    assert await dashboard.backend.dead_letters() == []
    for mid in dead:  # the outcome stays, for its ttl
        info = await dashboard.backend.inspect(mid)
        assert info is not None
        assert info.state == "dead"
    assert (await dashboard.backend.stats()).queues["work"].pending == 2


async def test_a_dry_run_that_matches_nothing_offers_no_action(dashboard: Dashboard) -> None:
    await send_work(dashboard, 2)
    preview = await dashboard.post("/messages", {"bulk": "retry:all", "state": "pending"})
    assert preview.status_code == 200
    assert "Nothing that this filter matches" in preview.text
    assert 'name="step" value="confirm"' not in preview.text


async def test_a_bulk_action_without_the_csrf_token_is_refused(dashboard: Dashboard) -> None:
    ids = await send_work(dashboard, 1)
    answer = await dashboard.client.post(
        "/messages", data={"bulk": "cancel:all", "step": "confirm", "csrf": "forged"}
    )
    assert answer.status_code == 403
    assert (await dashboard.backend.results(ids)) == {}


async def test_an_unknown_bulk_action_is_refused(dashboard: Dashboard) -> None:
    answer = await dashboard.post("/messages", {"bulk": "explode:all"})
    assert answer.status_code == 400


async def test_read_only_hides_and_refuses_bulk_actions(pigeon_app: pigeon.App) -> None:
    promise = pigeon_app.tasks["dash.work"].send(1)
    await promise.sent()
    async with client_for(dashboard_app(pigeon_app, read_only=True)) as client:
        page = await client.get("/messages")
        assert page.status_code == 200
        assert promise.id in page.text
        assert 'name="bulk"' not in page.text
        assert 'method="post"' not in page.text
        csrf = page.cookies.get("pigeon_csrf") or "x"
        answer = await client.post(
            "/messages", data={"bulk": "cancel:all", "step": "confirm", "csrf": csrf}
        )
        assert answer.status_code == 403
    assert await pigeon_app.backend.results([promise.id]) == {}


async def test_the_texts_of_a_message_are_escaped_on_the_list(dashboard: Dashboard) -> None:
    promise = dashboard.app.tasks["dash.leak"].send("x", pigeon.Secret("s"))
    await promise.sent()
    [delivery] = await dashboard.backend.fetch(["default"], 1, "w")
    error = Failure("<script>alert(1)</script>", "<script>")
    await dashboard.backend.settle([Outcome(delivery.id, delivery.attempt, "failed", error=error)])
    page = await dashboard.client.get("/messages", params={"queue": "<script>"})
    assert "<script>" not in page.text.replace('<script src="/static/dashboard.js" defer>', "")
    page = await dashboard.client.get("/messages")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert" not in page.text


async def test_a_dry_run_counts_up_to_its_limit_and_says_at_least(
    dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messages, "COUNT_LIMIT", 3)
    await send_work(dashboard, 5)
    preview = await dashboard.post("/messages", {"bulk": "cancel:all"})
    assert "Cancel at least 3 messages" in preview.text
