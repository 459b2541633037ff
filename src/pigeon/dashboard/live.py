"""Live pages: fragments for the browser's polling, and what a page shows while the backend
does not answer.

- **Fragments.** ``dashboard.js`` polls the page it shows at the interval chosen in the
  header (off, 2, 5, 10 or 30 seconds; 5 by default, kept in ``localStorage``) with the
  header ``X-Pigeon-Fragment: 1``, and the dashboard answers with the page's ``<main>``
  only, which the script swaps in. It polls only while the tab is visible
  (``document.visibilityState``), and skips a round while the user is typing in, or has
  selected rows of, a form of the page.
- **Unreachable backend.** A backend call that fails (the broker is down, or does not
  answer within ``CALL_TIMEOUT`` seconds) does not give a 500: the page is answered with a
  503 that says "backend unreachable since ..., retrying" above the last state this
  dashboard showed of that page (its ``<main>``, kept per page in ``LastKnown``, at most
  ``KEPT_PAGES`` of them), marked as such; a fragment's 503 carries the banner alone, so
  the script keeps what it shows and puts the banner above it. The first answer after the
  backend is back clears it. The pages' data is still the backend's: what is kept here is
  only the last rendering, shown only under that banner.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.requests import Request

from pigeon.errors import BackendError
from pigeon.timetext import format_duration

log = logging.getLogger("pigeon.dashboard")

#: The request header that asks for a page's ``<main>`` only.
FRAGMENT_HEADER = "x-pigeon-fragment"
#: The response header of a fragment's 503: the body is the banner, not the page.
STALE_HEADER = "X-Pigeon-Stale"
#: Seconds a page waits for the backend before it says it is unreachable.
CALL_TIMEOUT = 10.0
#: Pages whose last rendering is kept, the most recently shown.
KEPT_PAGES = 64
#: The longest error text shown in the banner.
ERROR_SHOWN = 200

#: What a backend raises when its server is gone: pigeon's own error (Redis after its
#: retries), the OS's (a refused or reset connection: asyncpg, SQLite's file) and timeouts.
UNREACHABLE: tuple[type[BaseException], ...] = (BackendError, OSError, TimeoutError)


def wants_fragment(request: Request) -> bool:
    return request.headers.get(FRAGMENT_HEADER) == "1"


def page_key(request: Request) -> str:
    return request.url.path + ("?" + request.url.query if request.url.query else "")


@dataclass(frozen=True)
class Outage:
    """Since when the backend has not answered, and the last error it gave."""

    since: float
    error: str

    def banner(self, now: float) -> str:
        stamp = time.strftime("%H:%M:%S", time.gmtime(self.since))
        return (
            f"Backend unreachable since {stamp} UTC ({format_duration(now - self.since)} ago),"
            f" retrying: {self.error}"
        )


class LastKnown:
    """The dashboard's view of the backend's health, and the last rendering of each page."""

    def __init__(self, kept: int = KEPT_PAGES) -> None:
        self.kept = kept
        self.outage: Outage | None = None
        self._pages: OrderedDict[str, str] = OrderedDict()

    def reached(self) -> None:
        """A backend call answered: any outage is over."""
        if self.outage is not None:
            log.info("the backend answers again")
        self.outage = None

    def failed(self, exc: BaseException) -> Outage:
        """A backend call failed with ``exc``: the outage it belongs to (begun now or before)."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if len(text) > ERROR_SHOWN:
            text = text[: ERROR_SHOWN - 1] + "…"
        since = self.outage.since if self.outage is not None else time.time()
        if self.outage is None:
            log.warning("the backend does not answer: %s", text)
        self.outage = Outage(since, text)
        return self.outage

    def keep(self, key: str, main: str) -> None:
        self._pages[key] = main
        self._pages.move_to_end(key)
        while len(self._pages) > self.kept:
            self._pages.popitem(last=False)

    def last(self, key: str) -> str | None:
        return self._pages.get(key)
