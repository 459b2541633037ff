"""The App's life tied to an ASGI app's lifespan: open at startup, flushed and closed at shutdown.

Two forms, for the two ways ASGI apps are put together:

- ``lifespan(app)`` for frameworks that take a lifespan context (FastAPI, Starlette)::

      tasks = pigeon.App()
      pigeon_lifespan = lifespan(tasks)
      web = FastAPI(lifespan=pigeon_lifespan)

      @web.post("/reports")
      async def create(app: Annotated[pigeon.App, Depends(pigeon_lifespan.get_app)]): ...

  or inside a lifespan of your own: ``async with lifespan(tasks): yield``.
- ``LifespanMiddleware(asgi_app, app)`` around any ASGI app: it speaks the ASGI lifespan
  protocol itself, so it works whether or not the wrapped app handles lifespan events.

At startup the App opens its backend on the server's event loop, which becomes the App's home
(``pigeon.home``): async endpoints send and ``await`` promises on it with no thread in between,
and sync endpoints (run by the framework in threads) block on it as sync code does. At
shutdown every send still batched is stored before the backend closes, so a message sent by a
request just before a redeploy is not lost.

ASGI is a plain protocol (a callable of scope, receive and send): this module imports no web
framework.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from pigeon.app import App
from pigeon.backends import redact

__all__ = ["ASGIApp", "Lifespan", "LifespanMiddleware", "lifespan"]

log = logging.getLogger("pigeon")

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: What the wrapped app sends that ends the App's part in the lifespan.
_ENDINGS = frozenset(
    {"lifespan.startup.failed", "lifespan.shutdown.complete", "lifespan.shutdown.failed"}
)


async def _open(app: App) -> None:
    # ``App.open`` runs on the loop it is awaited on; bridged, it runs on the App's home (the
    # server's loop, unless the App was used from sync code before the server started).
    await app.call(app.open())


class Lifespan:
    """Opens ``app`` on entry and closes it (pending sends stored first) on exit.

    An async context manager (``async with Lifespan(app):``, giving the App), and a
    lifespan function for Starlette and FastAPI (``FastAPI(lifespan=Lifespan(app))``:
    called with the web app, it returns a context that yields no state).
    """

    def __init__(self, app: App) -> None:
        self.app = app

    def get_app(self) -> App:
        """The App, for dependency injection: ``Depends(pigeon_lifespan.get_app)``."""
        return self.app

    async def __aenter__(self) -> App:
        await _open(self.app)
        return self.app

    async def __aexit__(self, *exc: object) -> None:
        await self.app.close()

    def __call__(self, web_app: object) -> AbstractAsyncContextManager[None]:
        return self._context()

    @asynccontextmanager
    async def _context(self) -> AsyncIterator[None]:
        async with self:
            yield


def lifespan(app: App) -> Lifespan:
    """The lifespan of ``app`` for a web app: see ``Lifespan``."""
    return Lifespan(app)


class LifespanMiddleware:
    """An ASGI app that opens ``pigeon_app`` with ``app``'s lifespan and closes it at its end.

    Startup opens the App before the wrapped app starts (its own startup may send), and
    shutdown closes it after the wrapped app has shut down (its shutdown may send too). An
    App that cannot open fails the startup, with the reason. A wrapped app that does not
    handle lifespan events (it raises on the lifespan scope without answering) is served
    here: the App still opens and closes with the server.
    """

    def __init__(self, app: ASGIApp, pigeon_app: App) -> None:
        self.app = app
        self.pigeon_app = pigeon_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        await _LifespanRun(self.app, self.pigeon_app, scope, receive, send).run()


class _LifespanRun:
    """One lifespan of a ``LifespanMiddleware``: the server's messages relayed to the wrapped
    app, with the App opened before its startup and closed before its shutdown is answered."""

    def __init__(
        self, inner: ASGIApp, pigeon_app: App, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.inner = inner
        self.pigeon_app = pigeon_app
        self.scope = scope
        self.receive = receive
        self.send = send
        self.first: ASGIMessage | None = None  # the startup message, relayed to the inner app
        self.answered = False  # the inner app sent a lifespan message: it speaks the protocol
        self.closed = False

    async def run(self) -> None:
        self.first = await self.receive()
        try:
            await _open(self.pigeon_app)
        except Exception as exc:
            await self.send({"type": "lifespan.startup.failed", "message": self._cannot(exc)})
            return
        try:
            await self.inner(self.scope, self._receive, self._send)
        except Exception:
            if self.answered:
                await self._close()
                raise
            # No answer before raising: the app does not handle lifespan events (as a server
            # in "auto" mode would conclude), so the lifespan is served here.
            log.debug("the wrapped ASGI app does not handle lifespan events", exc_info=True)
            await self._serve()
            return
        await self._close()  # the inner app returned without a shutdown: close anyway

    def _cannot(self, exc: BaseException) -> str:
        return f"pigeon could not open {redact(self.pigeon_app.url)}: {exc}"

    async def _receive(self) -> ASGIMessage:
        if self.first is not None:
            first, self.first = self.first, None
            return first
        return await self.receive()

    async def _send(self, message: ASGIMessage) -> None:
        self.answered = True
        if message["type"] in _ENDINGS:
            error = await self._close()
            if error is not None and message["type"] == "lifespan.shutdown.complete":
                message = {"type": "lifespan.shutdown.failed", "message": error}
        await self.send(message)

    async def _serve(self) -> None:
        """The lifespan of an app that has none: started at once, the App closed at the end."""
        await self.send({"type": "lifespan.startup.complete"})
        while (await self.receive())["type"] != "lifespan.shutdown":
            pass
        error = await self._close()
        if error is None:
            await self.send({"type": "lifespan.shutdown.complete"})
        else:
            await self.send({"type": "lifespan.shutdown.failed", "message": error})

    async def _close(self) -> str | None:
        """Close the App once; the reason it failed to, or None."""
        if self.closed:
            return None
        self.closed = True
        try:
            await self.pigeon_app.close()
        except Exception as exc:
            log.exception("closing the pigeon App at shutdown failed")
            return f"pigeon could not close {redact(self.pigeon_app.url)}: {exc}"
        return None
