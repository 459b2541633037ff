"""The dashboard's Messages page: the backend's ``list_messages`` behind a GET form of
filters, with cursor paging, and bulk actions on the rows selected or on everything the
filter matches.

A bulk action is two POSTs (each with the CSRF token; refused in read-only mode): the
first, a dry run, counts what the action would touch (up to ``COUNT_LIMIT`` messages over
at most ``COUNT_PAGES`` pages: beyond that the page says "at least N", since the backend
never counts everything) and asks to confirm; the second carries it out, one backend call
per page of ``CHUNK`` messages, at most ``BULK_LIMIT`` messages and ``BULK_PAGES`` pages
per request (the page says when more remain), and records an event per message acted on
(``Backend.publish``, ``worker="dashboard"``).

What each action does: **cancel** cancels waiting, scheduled and pending messages and asks
the workers of leased ones to stop them (``Backend.cancel``); **retry** puts dead letters
back to pending (``Backend.requeue``; a ``failed`` outcome keeps no message to run again,
so only dead letters can be retried); **purge** deletes dead letters
(``Backend.purge_dead``).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import get_args
from urllib.parse import quote, urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from pigeon.backends import Backend
from pigeon.backends.base import LIST_LIMIT, MessagePage, MessageQuery, MessageRow
from pigeon.backends.shared import LIVE_STATES, id_time
from pigeon.dashboard.host import Host
from pigeon.dashboard.live import UNREACHABLE
from pigeon.dashboard.security import Refused
from pigeon.message import Event, EventKind, State
from pigeon.timetext import format_when, parse_duration

#: Rows on one page of the list.
PAGE_ROWS = 50
#: A dry run counts up to this many messages...
COUNT_LIMIT = 1000
#: ...walking at most this many pages of the listing.
COUNT_PAGES = 20
#: A bulk action acts on the messages of one page of the listing per backend call.
CHUNK = LIST_LIMIT
#: One request acts on at most this many messages, walking at most BULK_PAGES pages of
#: the listing; the page says when more remain.
BULK_LIMIT = 10_000
BULK_PAGES = 200

#: The filters of the form, in its order (each a field of ``MessageQuery``).
FILTERS = ("queue", "task", "state", "key", "since", "until", "error", "prefix")
STATES: tuple[str, ...] = get_args(State)


@dataclass(frozen=True)
class Action:
    verb: str  # as the buttons say it
    done: str  # the notice after it, of {n} messages
    event: EventKind
    #: The states of the rows it acts on.
    states: frozenset[str]
    run: Callable[[Backend, list[str]], Awaitable[int]]


async def _cancel(b: Backend, ids: list[str]) -> int:
    return len(await b.cancel(ids))  # leased ones are asked to stop, not counted


ACTIONS: dict[str, Action] = {
    "cancel": Action(
        "Cancel",
        "Cancelled {n} (running ones were asked to stop)",
        "cancelled",
        LIVE_STATES,
        _cancel,
    ),
    "retry": Action(
        "Retry", "Requeued {n}", "requeued", frozenset({"dead"}), lambda b, i: b.requeue(i)
    ),
    "purge": Action(
        "Purge", "Purged {n}", "purged", frozenset({"dead"}), lambda b, i: b.purge_dead(i)
    ),
}


@dataclass(frozen=True)
class Filter:
    """The filters as the form gave them (for links and hidden fields) and as a query."""

    fields: dict[str, str]
    query: MessageQuery

    def link(self, base: str, **extra: str) -> str:
        params = {**self.fields, **{k: v for k, v in extra.items() if v}}
        return f"{base}/messages" + (f"?{urlencode(params)}" if params else "")


def read_filter(params: Mapping[str, str], now: float, limit: int = PAGE_ROWS) -> Filter:
    """The filter of a request's fields; ValueError (said to the user) for a wrong one."""
    fields = {name: params.get(name, "").strip() for name in FILTERS}
    fields = {name: value for name, value in fields.items() if value}
    state = fields.get("state")
    if state is not None and state not in STATES:
        raise ValueError(f"no such state: {state!r}")
    query = MessageQuery(
        queue=fields.get("queue"),
        task=fields.get("task"),
        state=state,  # type: ignore[arg-type]
        key=fields.get("key"),
        since=moment(fields["since"], now) if "since" in fields else None,
        until=moment(fields["until"], now) if "until" in fields else None,
        error=fields.get("error"),
        prefix=fields.get("prefix"),
        limit=limit,
    )
    return Filter(fields, query)


def moment(text: str, now: float) -> float:
    """A time as the form takes it: a duration ago (``10m``, ``2d``) or a UTC date and
    time (``2026-12-07``, ``2026-12-07 14:30``, ``2026-12-07T14:30:05``)."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (write a duration ago, like 10m or 2d, or a UTC date and "
            "time, like 2026-12-07 14:30)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


@dataclass(frozen=True)
class Row:
    id: str
    state: str
    queue: str
    task: str
    error: str
    made: str


def rows_of(page: MessagePage, now: float) -> list[Row]:
    return [
        Row(r.id, r.state, r.queue, r.task, r.error or "", format_when(id_time(r.id), now))
        for r in page.rows
    ]


class MessagesPage:
    """``GET /messages`` (the list) and ``POST /messages`` (bulk actions)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    async def page(self, request: Request) -> Response:
        params = request.query_params
        base = _base(request)
        mid = params.get("id", "").strip()
        if mid:  # the header's box: straight to that message
            return RedirectResponse(f"{base}/messages/{quote(mid, safe='')}", status_code=303)
        now = time.time()
        try:
            filt = read_filter(params, now)
        except ValueError as exc:
            return self._render(request, None, [], None, str(exc), 400)
        cursor = params.get("cursor") or None
        query = msgspec.structs.replace(filt.query, cursor=cursor)
        try:
            page = await self.host.call(_lister(query))
        except ValueError as exc:
            return self._render(request, filt, [], None, str(exc), 400)
        later = filt.link(base, cursor=page.next) if page.next is not None else None
        return self._render(request, filt, rows_of(page, now), later, _notice(params))

    def _render(
        self,
        request: Request,
        filt: Filter | None,
        rows: list[Row],
        later: str | None,
        notice: str,
        status: int = 200,
    ) -> HTMLResponse:
        base = _base(request)
        context = {
            "fields": filt.fields if filt is not None else {},
            "states": STATES,
            "rows": rows,
            "later": later,
            "newest": filt.link(base) if filt is not None else f"{base}/messages",
            "paged": bool(request.query_params.get("cursor")),
            "notice": notice if status == 200 else "",
            "problem": notice if status != 200 else "",
            "actions": ACTIONS,
        }
        return self.host.render(request, "messages.html", context, status)

    async def bulk(self, request: Request) -> Response:
        """A dry run (``step=preview``) or the action itself (``step=confirm``)."""
        try:
            self.host.guard.check_access(request)
            form = await self.host.guard.action_form(request)
            name, scope = _one(form, "bulk").partition(":")[::2]
            action = ACTIONS.get(name)
            if action is None or scope not in ("selected", "all"):
                raise Refused(400, "no such bulk action")
            filt = read_filter({k: _one(form, k) for k in FILTERS}, time.time(), CHUNK)
        except Refused as refused:
            return self.host.render(
                request, "refused.html", {"reason": refused.reason, "login": False}, refused.status
            )
        except ValueError as exc:
            return self.host.render(
                request, "refused.html", {"reason": str(exc), "login": False}, 400
            )
        ids = [i for i in form.get("id", []) if i][:CHUNK] if scope == "selected" else None
        try:
            if _one(form, "step") != "confirm":
                return await self._preview(request, name, action, filt, ids)
            done, more = await self._carry_out(action, filt, ids)
        except UNREACHABLE as exc:
            return self.host.unreachable(request, exc)
        back = filt.link(_base(request), done=name, n=str(done), more="1" if more else "")
        return RedirectResponse(back, status_code=303)

    async def _preview(
        self, request: Request, name: str, action: Action, filt: Filter, ids: list[str] | None
    ) -> Response:
        if ids is not None:
            count, at_least = len(ids), False
        else:
            count, at_least = await self._count(action, filt.query)
        context = {
            "name": name,
            "action": action,
            "count": count,
            "at_least": at_least,
            "ids": ids or [],
            "scope": "selected" if ids is not None else "all",
            "fields": filt.fields,
            "back": filt.link(_base(request)),
            "limit": BULK_LIMIT,
        }
        return self.host.render(request, "bulk.html", context)

    async def _count(self, action: Action, query: MessageQuery) -> tuple[int, bool]:
        """How many messages ``action`` would touch, up to ``COUNT_LIMIT``; and whether
        there may be more (the count then reads "at least")."""
        count = 0
        async for rows, _ in _matching(self.host, action, query, COUNT_PAGES):
            if rows is None:
                return count, True
            count += len(rows)
            if count >= COUNT_LIMIT:
                return COUNT_LIMIT, True
        return count, False

    async def _carry_out(
        self, action: Action, filt: Filter, ids: list[str] | None
    ) -> tuple[int, bool]:
        """Act in chunks; returns how many were acted on and whether more remain."""
        if ids is not None:
            targets = [MessageRow(i, "pending", "", "") for i in ids]
            return await self._act(action, targets), False
        done = 0
        async for rows, more in _matching(self.host, action, filt.query, BULK_PAGES):
            if rows is None:
                return done, True
            if rows:
                done += await self._act(action, rows)
            if done >= BULK_LIMIT:
                return done, more
        return done, False

    async def _act(self, action: Action, rows: Sequence[MessageRow]) -> int:
        ids = [r.id for r in rows]
        at = time.time()
        events = [Event(action.event, r.id, r.task, r.queue, at, worker="dashboard") for r in rows]

        async def run(b: Backend) -> int:
            count = await action.run(b, ids)
            await b.publish(events)
            return count

        return await self.host.call(run)


async def _matching(
    host: Host, action: Action, query: MessageQuery, pages: int
) -> AsyncIterator[tuple[list[MessageRow] | None, bool]]:
    """The rows ``action`` applies to among those ``query`` matches, a page at a time, with
    whether more pages follow; after ``pages`` pages, ``(None, True)`` when more remain."""
    if query.state is not None and query.state not in action.states:
        return
    if query.state is None and len(action.states) == 1:
        query = msgspec.structs.replace(query, state=next(iter(action.states)))
    cursor: str | None = None
    walked = 0
    while True:
        asked = msgspec.structs.replace(query, cursor=cursor, limit=CHUNK)
        page = await host.call(_lister(asked))
        walked += 1
        yield [r for r in page.rows if r.state in action.states], page.next is not None
        if page.next is None:
            return
        if walked >= pages:
            yield None, True
            return
        cursor = page.next


def _lister(query: MessageQuery) -> Callable[[Backend], Awaitable[MessagePage]]:
    return lambda b: b.list_messages(query)


def _notice(params: Mapping[str, str]) -> str:
    """What the redirect after a bulk action tells (its fields checked, never echoed)."""
    action = ACTIONS.get(params.get("done", ""))
    count = params.get("n", "")
    if action is None or not count.isdigit():
        return ""
    more = " More match: run it again for the rest." if params.get("more") else ""
    n = int(count)
    return action.done.format(n=f"{n:,} message{'' if n == 1 else 's'}") + "." + more


def _one(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0].strip()


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")
