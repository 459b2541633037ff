"""Secure by default: a token for anything but this machine, CSRF on every action,
read-only mode, strict headers."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pigeon
from pigeon.dashboard import TOKEN_ENV
from pigeon.dashboard import app as dashboard_app
from pigeon.dashboard.security import CSRF_COOKIE, SESSION_COOKIE

from .conftest import Dashboard, client_for, send_dead

TOKEN = "s3cret-token-for-tests"


async def test_without_a_token_only_this_machine_is_answered(pigeon_app: pigeon.App) -> None:
    web = dashboard_app(pigeon_app)
    async with client_for(web, client="10.1.2.3") as other:
        assert (await other.get("/")).status_code == 401
    async with client_for(web, base="http://evil.example") as rebound:  # DNS rebinding
        assert (await rebound.get("/")).status_code == 401
    async with client_for(web) as local:
        assert (await local.get("/")).status_code == 200


async def test_with_a_token_a_request_without_it_is_401(pigeon_app: pigeon.App) -> None:
    web = dashboard_app(pigeon_app, token=TOKEN)
    async with client_for(web, client="10.1.2.3") as client:
        for path in ("/", "/workers", "/dead", "/messages/x"):
            answer = await client.get(path)
            assert answer.status_code == 401
            assert 'name="token"' in answer.text  # the login form
        assert (await client.post("/pause", data={"queue": "q"})).status_code == 401
    assert await pigeon_app.backend.paused() == {}


async def test_a_wrong_token_is_401(pigeon_app: pigeon.App) -> None:
    web = dashboard_app(pigeon_app, token=TOKEN)
    async with client_for(web, client="10.1.2.3") as client:
        wrong = {"Authorization": "Bearer not-it"}
        assert (await client.get("/", headers=wrong)).status_code == 401
        login = await client.post("/login", data={"token": "not-it"})
        assert login.status_code == 401
        assert SESSION_COOKIE not in login.cookies
        client.cookies.set(SESSION_COOKIE, "forged")
        assert (await client.get("/")).status_code == 401


async def test_the_token_is_taken_as_a_bearer_header_or_through_the_login_form(
    pigeon_app: pigeon.App,
) -> None:
    web = dashboard_app(pigeon_app, token=TOKEN)
    async with client_for(web, client="10.1.2.3") as client:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.get("/", headers=bearer)).status_code == 200
        login = await client.post("/login", data={"token": TOKEN})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert TOKEN.lower() not in cookie  # the cookie is an HMAC of the token
        assert (await client.get("/")).status_code == 200


async def test_the_token_defaults_to_the_environment(
    pigeon_app: pigeon.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    web = dashboard_app(pigeon_app)
    async with client_for(web) as client:
        assert (await client.get("/")).status_code == 401
        ok = await client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200


async def test_an_action_with_a_missing_or_forged_csrf_token_is_403(
    dashboard: Dashboard,
) -> None:
    await dashboard.csrf()  # the cookie is set
    missing = await dashboard.client.post("/pause", data={"queue": "work"})
    assert missing.status_code == 403
    forged = await dashboard.client.post("/pause", data={"queue": "work", "csrf": "x" * 43})
    assert forged.status_code == 403
    dashboard.client.cookies.delete(CSRF_COOKIE)
    no_cookie = await dashboard.client.post("/pause", data={"queue": "work", "csrf": "x" * 43})
    assert no_cookie.status_code == 403
    assert await dashboard.backend.paused() == {}


async def test_read_only_hides_and_refuses_every_action(pigeon_app: pigeon.App) -> None:
    mid = await send_dead(pigeon_app, "text", "boom")
    await pigeon_app.backend.pause("work", "kept")
    web = dashboard_app(pigeon_app, read_only=True)
    async with client_for(web) as client:
        for path in ("/", "/dead", f"/messages/{mid}"):
            page = await client.get(path)
            assert page.status_code == 200
            for action in ('method="post"', 'name="csrf"', ">Pause<", ">Resume<", "Requeue",
                           "Purge"):  # fmt: skip
                assert action not in page.text, (path, action)
        csrf = client.cookies[CSRF_COOKIE]
        for path, data in [
            ("/pause", {"queue": "default"}),
            ("/resume", {"queue": "work"}),
            ("/dead", {"id": mid, "action": "requeue"}),
            ("/dead", {"id": mid, "action": "purge"}),
        ]:
            answer = await client.post(path, data={"csrf": csrf, **data})
            assert answer.status_code == 403
    assert list(await pigeon_app.backend.paused()) == ["work"]
    assert [d.id for d in await pigeon_app.backend.dead_letters()] == [mid]


async def test_every_response_carries_a_strict_content_security_policy(
    dashboard: Dashboard,
) -> None:
    for path in ("/", "/workers", "/dead", "/messages/x", "/login", "/static/dashboard.css"):
        answer = await dashboard.client.get(path)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
    page = (await dashboard.client.get("/")).text
    assert "<script>" not in page  # the one script is a file: <script src=... defer>
    assert "style=" not in page


def test_import_pigeon_does_not_import_the_dashboard_or_starlette() -> None:
    code = (
        "import sys, pigeon, pigeon.cli; "
        "assert 'pigeon.dashboard' not in sys.modules, 'dashboard'; "
        "assert 'starlette' not in sys.modules, 'starlette'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
