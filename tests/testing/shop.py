"""A small application, as a user's project would have one: the tasks the plugin's own
tests (and ``test_plugin_vs_worker``'s real worker process) run."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from datetime import datetime
from pathlib import Path

import pigeon

app = pigeon.App()

#: Where tasks that must fail a given number of times count their attempts (a file, so
#: that a worker process and the tests see the same counts).
COUNTS = Path(os.environ.get("SHOP_COUNTS") or Path(tempfile.gettempdir(), "pigeon-shop-counts"))


@dataclasses.dataclass
class Order:
    id: int
    placed: datetime
    lines: list[str]


@app.task(name="shop.total")
def total(order: Order, rate: float = 1.0) -> float:
    return len(order.lines) * 10 * rate


@app.task(name="shop.add")
async def add(a: int, b: int) -> int:
    return a + b


@app.task(name="shop.double")
async def double(n: int) -> int:
    return n * 2


@app.task(name="shop.sum")
async def summed(values: list[int]) -> int:
    return sum(values)


def _attempt(key: str) -> int:
    COUNTS.mkdir(parents=True, exist_ok=True)
    path = COUNTS / key
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


@app.task(name="shop.flaky", retries=2, retry_backoff=0.05)
async def flaky(key: str, failures: int) -> str:
    """Fails its first ``failures`` attempts."""
    n = _attempt(key)
    if n <= failures:
        raise ConnectionError(f"attempt {n} failed")
    return f"ok after {n}"


@app.task(name="shop.slow_flaky", retries=1, retry_backoff=60.0)
async def slow_flaky(key: str) -> int:
    """Fails once, then its retry (a minute later) succeeds."""
    n = _attempt(key)
    if n == 1:
        raise TimeoutError("the first attempt times out")
    return n


@app.task(name="shop.broken")
def broken(reason: str) -> None:
    raise ValueError(reason)


@app.task(name="shop.recover")
async def recover(failure: pigeon.Failure) -> str:
    return f"recovered from {failure.type}"


@app.task(name="shop.limited", limit=1)
async def limited(n: int) -> int:
    return n


@app.task(name="shop.rated", rate="20/s")
async def rated(n: int) -> int:
    return n
