"""Durations and times as people write and read them: what the CLI and the dashboard both
print (``format_duration``, ``format_when``, ``describe_pause``) and read (``parse_duration``).
"""

from __future__ import annotations

import datetime
import re

from pigeon.message import Pause, WorkerInfo

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhd])")


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``10m``, ``1h30m``, ``2d`` or ``0.5s``; ValueError if it is
    not one, or not above 0."""
    spec = text.strip().lower()
    try:
        seconds = float(spec)
    except ValueError:
        parts = _DURATION.findall(spec)
        if not parts or "".join(n + u for n, u in parts) != spec:
            raise ValueError(
                f"not a duration: {text!r} (write it like 90s, 10m, 1h30m or 2d)"
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"a duration is more than 0 seconds, not {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:02.0f}h"


def format_when(epoch: float | None, now: float) -> str:
    """An absolute UTC time and how far it is from now."""
    if epoch is None:
        return ""
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    delta = epoch - now
    relative = f"in {format_duration(delta)}" if delta > 0 else f"{format_duration(-delta)} ago"
    return f"{stamp} UTC ({relative})"


def describe_pause(pause: Pause, now: float) -> str:
    """How long a pause lasts, and why: what ``pause`` and ``status`` print."""
    until = f"until {format_when(pause.until, now)}" if pause.until is not None else "until resumed"
    return until + (f": {pause.reason}" if pause.reason else "")


def heartbeat_age(worker: WorkerInfo, age: float | None, now: float) -> str:
    """When something ``age`` seconds before ``worker``'s last heartbeat happened (its
    ``fetch_age`` or ``work_age``), as "3s ago", or "never"."""
    if age is None or not worker.last_seen:
        return "never"
    return f"{format_duration(max(0.0, now - worker.last_seen + age))} ago"
