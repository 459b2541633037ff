"""The dashboard's ASGI app: ``app(pigeon_app)``, a Starlette app of server-rendered pages.

Pages read the backend through the App (``App.backend_call``, on the App's home loop) on
every request: what they show is the backend's, never the dashboard's memory. Actions are
POSTs guarded by ``security.Guard``; each answers with a redirect back to its page (303).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import jinja2
import markupsafe
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pigeon.app import App
from pigeon.backends import Backend, redact
from pigeon.dashboard import views
from pigeon.dashboard.charts import Charts
from pigeon.dashboard.live import (
    CALL_TIMEOUT,
    STALE_HEADER,
    UNREACHABLE,
    LastKnown,
    page_key,
    wants_fragment,
)
from pigeon.dashboard.messages import MessagesPage
from pigeon.dashboard.metrics import MetricsPage
from pigeon.dashboard.pages import LimitsPage, PeriodicPage
from pigeon.dashboard.security import Guard, Refused, csrf_token, read_form, with_headers
from pigeon.integrations.asgi import lifespan
from pigeon.message import DeadLetter, MessageInfo, Stats
from pigeon.timetext import parse_duration

__all__ = ["TOKEN_ENV", "app"]

T = TypeVar("T")

#: The environment variable a dashboard's token defaults to.
TOKEN_ENV = "PIGEON_DASHBOARD_TOKEN"
#: Dead letters listed on one page.
LETTERS_SHOWN = 200

_HERE = Path(__file__).parent
Endpoint = Callable[[Request], Awaitable[Response]]


def app(pigeon_app: App, *, token: str | None = None, read_only: bool = False) -> Starlette:
    """The dashboard of ``pigeon_app``, an ASGI app to serve (``pigeon dashboard``) or to
    mount in one's own (``Mount("/pigeon", app=pigeon.dashboard.app(tasks))``).

    ``token`` (default: ``PIGEON_DASHBOARD_TOKEN``) is required of every request, as
    ``Authorization: Bearer TOKEN`` or through the login form's cookie; without one the
    dashboard answers only requests from this machine. ``read_only`` hides every action
    and refuses it (403). Served alone, it opens and closes the App with its lifespan.
    """
    dashboard = Dashboard(pigeon_app, Guard(token or os.environ.get(TOKEN_ENV), read_only))
    return Starlette(
        routes=dashboard.routes(),
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=with_headers)],
        lifespan=lifespan(pigeon_app),
    )


class Dashboard:
    """The pages and actions of one App's dashboard."""

    def __init__(self, pigeon_app: App, guard: Guard) -> None:
        self.pigeon_app = pigeon_app
        self.guard = guard
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,  # every text a message carries is escaped, whatever the page
            undefined=jinja2.StrictUndefined,
        )
        self.live = LastKnown()
        self.charts = Charts()

    def routes(self) -> list[Route | Mount]:
        page, act = self._page, self._action
        listing = MessagesPage(self)
        return [
            Route("/", page(self.overview), name="overview"),
            Route("/workers", page(self.workers), name="workers"),
            Route("/dead", page(self.dead), name="dead"),
            Route("/periodic", page(PeriodicPage(self).page), name="periodic"),
            Route("/limits", page(LimitsPage(self).page), name="limits"),
            Route("/messages", page(listing.page), name="messages"),
            Route("/messages", listing.bulk, methods=["POST"]),
            Route("/messages/{id}", page(self.message), name="message"),
            Route("/metrics", page(MetricsPage(self.pigeon_app)), name="metrics"),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/pause", act(self.pause), methods=["POST"]),
            Route("/resume", act(self.resume), methods=["POST"]),
            Route("/dead", act(self.dead_action), methods=["POST"]),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ]

    # plumbing ------------------------------------------------------------------------------

    def _page(self, view: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                self.guard.check_access(request)
            except Refused as refused:
                return self._refused(request, refused)
            try:
                return await view(request)
            except UNREACHABLE as exc:
                return self.unreachable(request, exc)

        return endpoint

    def _action(self, act: Callable[[Request, dict[str, list[str]]], Awaitable[str]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                self.guard.check_access(request)
                form = await self.guard.action_form(request)
            except Refused as refused:
                return self._refused(request, refused)
            try:
                back = await act(request, form)
            except ValueError as exc:  # a duration or pause the backend refused
                return self._refused(request, Refused(400, str(exc)))
            except UNREACHABLE as exc:
                return self.unreachable(request, exc)
            return RedirectResponse(_base(request) + back, status_code=303)

        return endpoint

    def _refused(self, request: Request, refused: Refused) -> Response:
        login = refused.status == 401 and self.guard.token is not None
        return self.render(
            request, "refused.html", {"reason": refused.reason, "login": login}, refused.status
        )

    def render(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> HTMLResponse:
        template = self.templates.get_template(name)
        values = {
            "base": _base(request),
            "url": redact(self.pigeon_app.url),
            "csrf": csrf_token(request),
            "read_only": self.guard.read_only,
            "quote": lambda s: quote(s, safe=""),
            "live": request.method == "GET" and status == 200,
            "stale": None,
            **context,
        }
        if "main" in template.blocks and status == 200 and request.method == "GET":
            main = "".join(template.blocks["main"](template.new_context(values)))
            self.live.keep(page_key(request), main)
            if wants_fragment(request):
                return HTMLResponse(main)
        return HTMLResponse(template.render(values), status_code=status)

    def unreachable(self, request: Request, exc: BaseException) -> HTMLResponse:
        """The answer while the backend does not answer (503): the banner, over the page's
        last rendering when there is one (a fragment: the banner alone)."""
        outage = self.live.failed(exc)
        banner = outage.banner(time.time())
        if wants_fragment(request):
            return HTMLResponse(
                markupsafe.escape(banner), status_code=503, headers={STALE_HEADER: "1"}
            )
        last = self.live.last(page_key(request)) if request.method == "GET" else None
        context = {
            "stale": banner,
            "last": markupsafe.Markup(last) if last else None,  # our own escaped rendering
            "live": request.method == "GET",  # the script retries until the backend answers
        }
        return self.render(request, "stale.html", context, 503)

    async def call(self, op: Callable[[Backend], Awaitable[T]]) -> T:
        """Run one backend operation; UNREACHABLE errors (a timeout after CALL_TIMEOUT
        seconds included) make the page say the backend is unreachable."""
        async with asyncio.timeout(CALL_TIMEOUT):
            value = await self.pigeon_app.backend_call(op)
        self.live.reached()
        return value

    # pages ---------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        stats, now = await self.call(_stats)
        context = {
            "queues": views.queue_rows(stats, now),
            "states": views.STATES,
            "totals": views.totals(stats),
            "stats": stats,
            "stalled": sum(1 for w in stats.workers if views.is_stalled(w, stats, now)),
            "charts": await self.charts.read(self.call, now),
        }
        return self.render(request, "overview.html", context)

    async def workers(self, request: Request) -> Response:
        stats, now = await self.call(_stats)
        context = {"workers": views.worker_rows(stats, now), "after": views.STALLED_AFTER}
        return self.render(request, "workers.html", context)

    async def dead(self, request: Request) -> Response:
        queue = request.query_params.get("queue") or None

        async def read(b: Backend) -> tuple[list[DeadLetter], Stats, float]:
            return await b.dead_letters(queue, LETTERS_SHOWN), await b.stats(), await b.time()

        letters, stats, now = await self.call(read)
        context = {
            "letters": views.letter_rows(letters, now),
            "queue": queue,
            "total": stats.dead,
            "limit": LETTERS_SHOWN,
        }
        return self.render(request, "dead.html", context)

    async def message(self, request: Request) -> Response:
        mid = request.path_params["id"]

        async def read(b: Backend) -> tuple[MessageInfo | None, float]:
            return await b.inspect(mid), await b.time()

        info, now = await self.call(read)
        if info is None:
            return self.render(request, "missing.html", {"id": mid}, 404)
        error = info.result.error if info.result is not None else None
        context = {"info": info, "rows": views.detail_rows(info, now), "error": error}
        return self.render(request, "message.html", context)

    async def login_form(self, request: Request) -> Response:
        return self.render(request, "refused.html", {"reason": "", "login": True})

    async def login(self, request: Request) -> Response:
        body = await request.body()
        form = read_form(body) if len(body) < 4096 else {}
        response = RedirectResponse(_base(request) + "/", status_code=303)
        if self.guard.login((form.get("token") or [""])[0], response, request):
            return response
        return self._refused(request, Refused(401, "wrong token"))

    # actions -------------------------------------------------------------------------------

    async def pause(self, request: Request, form: dict[str, list[str]]) -> str:
        queue = _one(form, "queue")
        reason = _one(form, "reason") or None
        duration = _one(form, "for")
        seconds = parse_duration(duration) if duration else None
        if queue:

            async def run(b: Backend) -> None:
                until = None if seconds is None else await b.time() + seconds
                await b.pause(queue, reason, until)

            await self.call(run)
        return "/"

    async def resume(self, request: Request, form: dict[str, list[str]]) -> str:
        queue = _one(form, "queue")
        if queue:
            await self.call(lambda b: b.resume(queue))
        return "/"

    async def dead_action(self, request: Request, form: dict[str, list[str]]) -> str:
        ids = [i for i in form.get("id", []) if i]
        action = _one(form, "action")
        if ids and action == "requeue":
            await self.call(lambda b: b.requeue(ids))
        elif ids and action == "purge":
            await self.call(lambda b: b.purge_dead(ids))
        queue = _one(form, "queue")
        return "/dead" + (f"?queue={quote(queue, safe='')}" if queue else "")


async def _stats(b: Backend) -> tuple[Stats, float]:
    return await b.stats(), await b.time()


def _base(request: Request) -> str:
    """The path the dashboard is mounted at ('' at the root), for its links."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _one(form: dict[str, list[str]], name: str) -> str:
    """A field's first value, stripped ('' when it is absent)."""
    return (form.get(name) or [""])[0].strip()
