"""What the dashboard's page modules (``messages.py``, ``pages.py``) need of the dashboard
itself (``web.Dashboard``), so that they do not import it: its guard, its App, rendering a
template, a backend call with the dashboard's deadline, and the unreachable-backend page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import HTMLResponse

from pigeon.app import App
from pigeon.backends import Backend
from pigeon.dashboard.security import Guard

T = TypeVar("T")


class Host(Protocol):
    guard: Guard
    pigeon_app: App

    def render(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> HTMLResponse: ...

    async def call(self, op: Callable[[Backend], Awaitable[T]]) -> T: ...

    def unreachable(self, request: Request, exc: BaseException) -> HTMLResponse: ...
