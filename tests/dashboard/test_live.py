"""Live pages: a fragment is the page's <main> only, and a backend that does not answer
gives a page that says so (503, "backend unreachable since ..."), over the last state
shown, instead of a 500; the first answer after it is back clears the banner."""

from __future__ import annotations

import contextlib

import pytest

import pigeon
from pigeon.dashboard import app as dashboard_app

from .conftest import Dashboard, client_for
from .redis_server import free_port, private_redis

FRAGMENT = {"X-Pigeon-Fragment": "1"}


async def test_a_fragment_is_the_pages_main_only(dashboard: Dashboard) -> None:
    await dashboard.app.tasks["dash.work"].send(1).sent()
    page = await dashboard.client.get("/")
    assert "<main data-live>" in page.text
    assert 'id="live-every"' in page.text
    fragment = await dashboard.client.get("/", headers=FRAGMENT)
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert "<header>" not in fragment.text
    assert "<td>work</td>" in fragment.text
    assert fragment.headers["content-security-policy"].startswith("default-src 'self'")


@pytest.mark.parametrize(
    "url",
    [
        "redis://:sekret-pw@127.0.0.1:{port}/0?retry_for=0.5",
        "postgresql://postgres:sekret-pw@127.0.0.1:{port}/test",
    ],
    ids=["redis", "postgres"],
)
async def test_a_backend_on_a_closed_port_gives_the_unreachable_banner_not_a_500(
    url: str,
) -> None:
    app = pigeon.App(url.format(port=free_port()))
    try:
        async with client_for(dashboard_app(app)) as client:
            page = await client.get("/")
            assert page.status_code == 503
            assert "Backend unreachable since" in page.text
            assert "retrying" in page.text
            assert "<main data-live>" in page.text  # the script keeps trying
            assert "Traceback" not in page.text
            assert "sekret-pw" not in page.text  # the URL's password, in no error shown
            fragment = await client.get("/workers", headers=FRAGMENT)
            assert fragment.status_code == 503
            assert fragment.headers["x-pigeon-stale"] == "1"
            assert fragment.text.startswith("Backend unreachable since")
    finally:
        with contextlib.suppress(Exception):
            await app.close()


async def test_a_backend_that_goes_away_shows_the_last_state_under_the_banner() -> None:
    port = free_port()
    app = pigeon.App(f"redis://127.0.0.1:{port}/0?retry_for=0.5&prefix=dash-live")

    @app.task(name="dash.visible", queue="visible")
    async def visible() -> None:
        return None

    try:
        async with client_for(dashboard_app(app)) as client:
            with private_redis(port):
                await visible.send().sent()
                page = await client.get("/")
                assert page.status_code == 200
                assert "<td>visible</td>" in page.text
            stale = await client.get("/")
            assert stale.status_code == 503
            assert "Backend unreachable since" in stale.text
            assert "<td>visible</td>" in stale.text  # the last state shown, marked stale
            assert 'class="last-known"' in stale.text
            with private_redis(port):
                await visible.send().sent()  # a fresh server: the message sent anew
                back = await client.get("/")
                assert back.status_code == 200
                assert "Backend unreachable" not in back.text
                assert "<td>visible</td>" in back.text
    finally:
        with contextlib.suppress(Exception):
            await app.close()


async def test_a_bulk_action_on_an_unreachable_backend_gives_the_banner_not_a_500() -> None:
    app = pigeon.App(f"redis://127.0.0.1:{free_port()}/0?retry_for=0.5")
    try:
        async with client_for(dashboard_app(app)) as client:
            await client.get("/login")  # sets the CSRF cookie
            token = client.cookies.get("pigeon_csrf")
            assert token, dict(client.cookies)
            for step in ("preview", "confirm"):
                data = {"csrf": token, "bulk": "cancel:all", "queue": "work", "step": step}
                answer = await client.post("/messages", data=data)
                assert answer.status_code == 503, answer.text
                assert "Backend unreachable since" in answer.text
                assert "Traceback" not in answer.text
    finally:
        with contextlib.suppress(Exception):
            await app.close()
