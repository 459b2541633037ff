"""Rate and concurrency limits of a task, as declared with ``@app.task(rate=..., limit=...)``.

This module only describes the limits and names the bucket or place a call falls under;
the worker applies them (``pigeon.worker.limits``) through the backend's ``take`` (token
buckets) and ``acquire`` (leased places), so they hold across every worker.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pigeon.errors import ConfigError

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([smhd])\s*$")


def parse_rate(rate: str, name: str = "?") -> float:
    """The interval (seconds between starts) of a rate like ``"100/s"``, ``"10/m"``,
    ``"1000/h"``, ``"5/d"`` or ``"3/10s"``. Raises ConfigError naming the task."""
    match = _RATE.match(rate) if isinstance(rate, str) else None
    if match is None:
        raise ConfigError(
            f"task {name!r}: rate {rate!r} is not a rate; write it as COUNT/PERIOD, e.g."
            ' "100/s", "10/m", "1000/h" or "3/10s"'
        )
    count, length, unit = float(match[1]), float(match[2] or 1.0), match[3]
    if count <= 0 or length <= 0:
        raise ConfigError(f"task {name!r}: rate {rate!r} must allow more than 0 starts")
    return length * _PERIODS[unit] / count


@dataclass(frozen=True)
class TaskLimits:
    """How fast and how many at once one task's messages may start, across all workers.

    - ``interval`` (from ``rate``): seconds between two starts; ``burst`` starts may go back
      to back. ``rate_key``, when given, is called with the task's arguments and gives each
      key its own bucket (a rate per user, say).
    - ``limit``: at most this many run at once; ``limit_key`` likewise splits it per key.
    """

    name: str
    interval: float | None = None
    burst: int = 1
    rate_key: Callable[..., Any] | None = None
    limit: int | None = None
    limit_key: Callable[..., Any] | None = None

    @classmethod
    def from_options(cls, name: str, options: dict[str, Any]) -> TaskLimits | None:
        """Pops the limit options out of ``options``; None when the task has none."""
        rate = options.pop("rate", None)
        burst = options.pop("burst", 1)
        rate_key = options.pop("rate_key", None)
        limit = options.pop("limit", None)
        limit_key = options.pop("limit_key", None)
        if rate is None and limit is None:
            for given, what in ((rate_key, "rate_key"), (limit_key, "limit_key")):
                if given is not None:
                    raise ConfigError(f"task {name!r}: {what} needs {what.split('_')[0]}=")
            if burst != 1:
                raise ConfigError(f"task {name!r}: burst needs rate=")
            return None
        if rate is None and (rate_key is not None or burst != 1):
            raise ConfigError(f"task {name!r}: rate_key and burst need rate=")
        if limit is None and limit_key is not None:
            raise ConfigError(f"task {name!r}: limit_key needs limit=")
        if not isinstance(burst, int) or burst < 1:
            raise ConfigError(f"task {name!r}: burst must be an integer >= 1, not {burst!r}")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"task {name!r}: limit must be an integer >= 1, not {limit!r}")
        for given, what in ((rate_key, "rate_key"), (limit_key, "limit_key")):
            if given is not None and not callable(given):
                raise ConfigError(f"task {name!r}: {what} must be callable, not {given!r}")
        interval = parse_rate(rate, name) if rate is not None else None
        return cls(name, interval, burst, rate_key, limit, limit_key)

    def keys(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[str, str]:
        """The rate bucket and the concurrency limit a call with these arguments falls
        under (the ``rate_key`` and ``limit_key`` functions are called here)."""
        return (
            self._named("rate", self.rate_key, args, kwargs),
            self._named("limit", self.limit_key, args, kwargs),
        )

    def _named(
        self, kind: str, key: Callable[..., Any] | None, args: list[Any], kwargs: dict[str, Any]
    ) -> str:
        if key is None:
            return f"{kind}:{self.name}"
        return f"{kind}:{self.name}:{key(*args, **kwargs)}"
