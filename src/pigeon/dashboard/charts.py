"""The overview's charts: outcomes and failures per minute over the last hour, and queue
wait and run time (p50, p95), from the backend's event log (``Backend.read_events``).

What the log holds, and so what the charts can show:

- Events are published only by Apps and workers with ``events=True`` (``PIGEON_EVENTS=1``).
  Outcomes and run times need the workers' events (``started`` and one per outcome, with
  the attempt); queue wait needs the senders' too (``sent``): the wait of a first attempt
  is its ``started`` time less its ``sent`` time. Without events the page says so.
- The log keeps at least the newest ``EVENTS_KEPT`` (10,000) events, about five per
  message: past roughly 2,000 messages an hour it covers less than the hour, and the page
  says from when it covers.
- Times are the publishers' clocks (``Event.at``); on one machine, or machines kept in
  time, that is close enough for minutes and percentiles.

The log is read from its oldest kept event: the contract's cursors are opaque and ``None``
means "from now on", so ``LOG_START`` ("0") is the one cursor every backend reads as before
its first event (an integer sequence on memory, SQLite and PostgreSQL, a stream id on
Redis). A reading is kept ``CACHE_FOR`` seconds, however often the overview is loaded.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import markupsafe

from pigeon.backends import Backend
from pigeon.backends.base import EVENTS_KEPT
from pigeon.message import Event
from pigeon.timetext import format_duration

#: The cursor of ``read_events`` before the oldest event kept (see the module docstring).
LOG_START = "0"
#: The charts cover this many minutes, up to now.
MINUTES = 60
#: Events read per call.
READ = 1000
#: A reading of the log is reused this long (seconds).
CACHE_FOR = 10.0

_FINAL = frozenset({"succeeded", "failed", "dead", "cancelled", "retried"})
_FAILED = frozenset({"failed", "dead", "retried"})

Call = Callable[[Callable[[Backend], Awaitable[list[Event]]]], Awaitable[list[Event]]]


@dataclass(frozen=True)
class Spread:
    """Percentiles of a set of durations (seconds)."""

    count: int = 0
    p50: float = 0.0
    p95: float = 0.0

    def text(self, which: str) -> str:
        return format_duration(getattr(self, which)) if self.count else "-"


@dataclass(frozen=True)
class Summary:
    """What the charts show, per minute (oldest first) and over the hour."""

    now: float
    events: int = 0  # events read from the log
    since: float | None = None  # the oldest event read
    succeeded: list[int] = field(default_factory=lambda: [0] * MINUTES)
    failed: list[int] = field(default_factory=lambda: [0] * MINUTES)
    run_p50: list[float | None] = field(default_factory=lambda: [None] * MINUTES)
    run_p95: list[float | None] = field(default_factory=lambda: [None] * MINUTES)
    wait: Spread = Spread()
    run: Spread = Spread()

    @property
    def partial(self) -> bool:
        """Whether the log starts within the hour although it is full (older events gone)."""
        return (
            self.since is not None
            and self.since > self.now - MINUTES * 60
            and self.events >= EVENTS_KEPT
        )

    def throughput_svg(self) -> markupsafe.Markup:
        return bars(self.succeeded, self.failed, self.now)

    def run_svg(self) -> markupsafe.Markup:
        return lines(self.run_p50, self.run_p95, self.now)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def spread(values: Sequence[float]) -> Spread:
    if not values:
        return Spread()
    return Spread(len(values), percentile(values, 50), percentile(values, 95))


def summarize(events: Sequence[Event], now: float) -> Summary:
    """The charts' numbers of ``events`` (any order: publishers interleave) at ``now``."""
    start = now - MINUTES * 60
    sent: dict[str, float] = {}
    started: dict[tuple[str, int], float] = {}
    for e in events:
        if e.kind == "sent":
            sent[e.id] = e.at
        elif e.kind == "started":
            started[(e.id, e.attempt)] = e.at
    succeeded, failed = [0] * MINUTES, [0] * MINUTES
    runs: list[float] = []
    by_minute: list[list[float]] = [[] for _ in range(MINUTES)]
    for e in events:
        if e.kind not in _FINAL or not start <= e.at <= now + 60:
            continue
        minute = min(MINUTES - 1, int((e.at - start) // 60))
        if e.kind in _FAILED:
            failed[minute] += 1
        elif e.kind == "succeeded":
            succeeded[minute] += 1
        began = started.get((e.id, e.attempt))
        if began is not None and e.at >= began:
            runs.append(e.at - began)
            by_minute[minute].append(e.at - began)
    waits = [
        at - sent[mid]
        for (mid, attempt), at in started.items()
        if attempt == 1 and mid in sent and at >= start and at >= sent[mid]
    ]
    return Summary(
        now=now,
        events=len(events),
        since=min((e.at for e in events), default=None),
        succeeded=succeeded,
        failed=failed,
        run_p50=[percentile(m, 50) if m else None for m in by_minute],
        run_p95=[percentile(m, 95) if m else None for m in by_minute],
        wait=spread(waits),
        run=spread(runs),
    )


async def read_log(b: Backend) -> list[Event]:
    """Every event the log keeps, oldest first (a bounded number of calls)."""
    cursor, found = LOG_START, []
    for _ in range(EVENTS_KEPT // READ + 2):
        cursor, events = await b.read_events(cursor, READ, 0.0)
        if not events:
            break
        found.extend(events)
    return found


class Charts:
    """The overview's charts, read at most once per ``CACHE_FOR`` seconds."""

    def __init__(self, cache_for: float = CACHE_FOR) -> None:
        self.cache_for = cache_for
        self._kept: tuple[float, Summary] | None = None

    async def read(self, call: Call, now: float) -> Summary:
        if self._kept is not None and time.monotonic() - self._kept[0] < self.cache_for:
            return self._kept[1]
        summary = summarize(await call(read_log), now)
        self._kept = (time.monotonic(), summary)
        return summary


# SVG, drawn here: numbers only, no text of a message, so nothing to escape. -------------

_W, _H, _LEFT, _BOTTOM, _TOP = 600, 150, 34, 18, 8


def _frame(top_label: str, now: float) -> list[str]:
    base = _H - _BOTTOM
    hour_ago = time.strftime("%H:%M", time.gmtime(now - MINUTES * 60))
    half = time.strftime("%H:%M", time.gmtime(now - MINUTES * 30))
    at = time.strftime("%H:%M", time.gmtime(now))
    return [
        f'<line class="axis" x1="{_LEFT}" y1="{base}" x2="{_W}" y2="{base}"/>',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{base}"/>',
        f'<text x="{_LEFT - 4}" y="{_TOP + 8}" text-anchor="end">{top_label}</text>',
        f'<text x="{_LEFT - 4}" y="{base}" text-anchor="end">0</text>',
        f'<text x="{_LEFT}" y="{_H - 4}">{hour_ago}</text>',
        f'<text x="{(_LEFT + _W) / 2}" y="{_H - 4}" text-anchor="middle">{half}</text>',
        f'<text x="{_W}" y="{_H - 4}" text-anchor="end">{at} UTC</text>',
    ]


def _svg(parts: list[str], label: str) -> markupsafe.Markup:
    body = "".join(parts)
    return markupsafe.Markup(
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-label="{label}"'
        f' xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def bars(succeeded: list[int], failed: list[int], now: float) -> markupsafe.Markup:
    """Stacked bars per minute: succeeded below, failed attempts above."""
    top = max([s + f for s, f in zip(succeeded, failed, strict=True)] + [1])
    height = _H - _BOTTOM - _TOP
    slot = (_W - _LEFT) / len(succeeded)
    parts = _frame(f"{top:,}", now)
    for i, (s, f) in enumerate(zip(succeeded, failed, strict=True)):
        if not s and not f:
            continue
        x = _LEFT + i * slot + 1
        minute = time.strftime("%H:%M", time.gmtime(now - (len(succeeded) - i) * 60))
        hs, hf = height * s / top, height * f / top
        base = _H - _BOTTOM
        parts.append(
            f"<g><title>{minute} UTC: {s:,} succeeded, {f:,} failed attempts</title>"
            f'<rect class="bar" x="{x:.1f}" y="{base - hs:.1f}" width="{slot - 2:.1f}"'
            f' height="{hs:.1f}"/>'
            f'<rect class="bar failed" x="{x:.1f}" y="{base - hs - hf:.1f}"'
            f' width="{slot - 2:.1f}" height="{hf:.1f}"/></g>'
        )
    return _svg(parts, "succeeded and failed per minute, last hour")


def lines(p50: list[float | None], p95: list[float | None], now: float) -> markupsafe.Markup:
    """Run time p50 and p95 per minute, as two polylines over the minutes with outcomes."""
    top = max([v for v in p95 if v is not None] + [0.001])
    height = _H - _BOTTOM - _TOP
    slot = (_W - _LEFT) / len(p50)
    parts = _frame(format_duration(top), now)
    for name, values in (("p50", p50), ("p95", p95)):
        points = [
            f"{_LEFT + (i + 0.5) * slot:.1f},{_H - _BOTTOM - height * v / top:.1f}"
            for i, v in enumerate(values)
            if v is not None
        ]
        if len(points) == 1:
            x, y = points[0].split(",")
            parts.append(f'<circle class="{name}" cx="{x}" cy="{y}" r="2"/>')
        elif points:
            parts.append(f'<polyline class="{name}" points="{" ".join(points)}"/>')
    return _svg(parts, "run time p50 and p95 per minute, last hour")
