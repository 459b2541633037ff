"""Who may see the dashboard and act through it: the token, the CSRF token, the headers.

- **Without a token** the dashboard answers only requests from this machine: a loopback
  client address *and* a loopback ``Host`` (so a web page whose domain was made to resolve
  to 127.0.0.1, DNS rebinding, gets 401 too).
- **With a token** every request carries it, as ``Authorization: Bearer TOKEN`` or as the
  session cookie the login form sets (HttpOnly, SameSite=Strict; its value is an HMAC of
  the token, never the token itself). Comparisons are ``hmac.compare_digest``.
- **Every action** is a POST whose form carries the CSRF token, a random value also set as
  a cookie (double submit): a page of another site can neither read the cookie nor forge
  the field. A missing or wrong one is 403; so is any action in read-only mode.
- **Every response** has a strict Content-Security-Policy (no inline script, nothing from
  elsewhere, no framing), ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``
  and ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from pigeon.addresses import is_loopback

#: The session cookie set by the login form (with a token only).
SESSION_COOKIE = "pigeon_dashboard"
#: The CSRF cookie, whose value every action's form repeats in its ``csrf`` field.
CSRF_COOKIE = "pigeon_csrf"
#: The largest action form read (bytes): ids of the dead letters selected, a reason.
MAX_FORM = 256 * 1024

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none';"
        " object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Refused(Exception):
    """A request that may not be served: its status (401, 403, 413) and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def session_value(token: str) -> str:
    """The session cookie's value for ``token``: an HMAC, so the cookie is not the token."""
    return hmac.new(token.encode(), b"pigeon dashboard session", hashlib.sha256).hexdigest()


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class Guard:
    """The dashboard's checks, given its token (None: this machine only) and mode."""

    def __init__(self, token: str | None, read_only: bool) -> None:
        self.token = token or None
        self.read_only = read_only
        self._session = session_value(token) if token else None

    def check_access(self, request: Request) -> None:
        """Raise Refused(401) unless the request may see the dashboard."""
        if self.token is None:
            client = request.client.host if request.client else ""
            host = request.url.hostname or ""  # from the Host header
            if not (is_loopback(client) and is_loopback(host)):
                raise Refused(
                    401,
                    "this dashboard has no token: it answers only on this machine"
                    " (start it with --token or PIGEON_DASHBOARD_TOKEN)",
                )
            return
        if not self.authenticated(request):
            raise Refused(401, "a token is needed: sign in, or send Authorization: Bearer")

    def authenticated(self, request: Request) -> bool:
        """Whether the request carries the token (header) or the session cookie."""
        if self.token is None or self._session is None:
            return True
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and same(credentials.strip(), self.token):
            return True
        return same(request.cookies.get(SESSION_COOKIE), self._session)

    def login(self, given: str, response: Response, request: Request) -> bool:
        """Set the session cookie on ``response`` when ``given`` is the token."""
        if self.token is None or self._session is None or not same(given, self.token):
            return False
        response.set_cookie(
            SESSION_COOKIE,
            self._session,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=_cookie_path(request),
        )
        return True

    async def action_form(self, request: Request) -> dict[str, list[str]]:
        """The form of an action, once it is known to be allowed: read-only mode and a
        missing or wrong CSRF token raise Refused(403)."""
        if self.read_only:
            raise Refused(403, "this dashboard is read-only")
        body = await request.body()
        if len(body) > MAX_FORM:
            raise Refused(413, "the form is too large")
        form = read_form(body)
        given = form["csrf"][0] if form.get("csrf") else None
        cookie = request.cookies.get(CSRF_COOKIE)
        if cookie is None or not same(given, cookie):
            raise Refused(403, "missing or wrong CSRF token: reload the page and try again")
        return form


def read_form(body: bytes) -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body: each field's values, in order."""
    form: dict[str, list[str]] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        form.setdefault(name, []).append(value)
    return form


def csrf_token(request: Request) -> str:
    """The request's CSRF token: its cookie's, or a new one (set by ``with_headers``)."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing and len(existing) >= 32:
        return existing
    token: str | None = getattr(request.state, "csrf", None)
    if token is None:
        token = secrets.token_urlsafe(32)
        request.state.csrf = token
    return token


def _cookie_path(request: Request) -> str:
    return request.scope.get("root_path", "") or "/"


async def with_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Middleware: the security headers on every response, and the CSRF cookie set when
    the page just rendered made a new token."""
    response = await call_next(request)
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    new: str | None = getattr(request.state, "csrf", None)
    if new is not None:
        response.set_cookie(
            CSRF_COOKIE,
            new,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=_cookie_path(request),
        )
    return response
