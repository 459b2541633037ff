"""The App that ``pigeon demo`` runs: a few small tasks that show what pigeon does.

Its URL comes from ``PIGEON_URL`` (``pigeon demo`` points it at a database in a temporary
directory). To play with it yourself::

    pigeon worker pigeon.demo_app:app
    pigeon send pigeon.demo_app:app resize photo.png 200 --wait     # in another shell
"""

from __future__ import annotations

import asyncio
import time
import zlib
from dataclasses import dataclass

import pigeon

app = pigeon.App()


@app.task
async def resize(path: str, width: int) -> str:
    """Pretend to resize an image: an async task, so it awaits instead of blocking."""
    await asyncio.sleep(0.05 + (zlib.crc32(path.encode()) % 250) / 1000)
    stem, dot, ext = path.rpartition(".")
    return f"{stem}@{width}{dot}{ext}" if dot else f"{path}@{width}"


@app.task
def checksum(text: str) -> int:
    """The CRC-32 of ``text``: a sync task, so the worker runs it in its thread pool."""
    time.sleep(0.05)  # stands for blocking work (a file read, a C library)
    return zlib.crc32(text.encode())


@dataclass
class Receipt:
    """What ``flaky`` returns: results are typed, and dataclasses round-trip."""

    order: str
    attempt: int


@app.task(retries=2, retry_backoff=0.2)
async def flaky(order: str) -> Receipt:
    """Fails its first attempt (a simulated outage) and succeeds when the worker retries it."""
    me = pigeon.current()
    if me.failures == 0:
        raise ConnectionError("the payment gateway timed out (simulated)")
    return Receipt(order, attempt=me.failures + 1)


@app.task
async def shout(text: str) -> str:
    """The end of a durable chain: ``resize.send(...).then(shout)``."""
    return text.upper()


@app.task
async def total(numbers: list[int]) -> int:
    """The target of a durable join: ``Promise.all([...]).then(total)``."""
    return sum(numbers)
