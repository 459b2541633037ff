"""What a fetching process runs: importable by name, so ``spawn`` can start it."""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

from pigeon.backends import from_url
from pigeon.message import Outcome


def fetch_and_settle_until_empty(url: str, queue: str, start: Any, out: Any, worker: str) -> None:
    """Leases from ``queue`` until nothing is due, settling each batch; reports to ``out``.

    Puts ``(worker, [(id, attempt), ...], [applied, ...], error)`` on ``out``.
    """
    try:
        leased, applied = asyncio.run(_run(url, queue, start, worker))
        out.put((worker, leased, applied, None))
    except BaseException:
        out.put((worker, [], [], traceback.format_exc()))
        raise


async def _run(
    url: str, queue: str, start: Any, worker: str
) -> tuple[list[tuple[str, int]], list[bool]]:
    backend = from_url(url)
    await backend.open()
    try:
        await asyncio.to_thread(start.wait, 60)
        return await fetch_until_empty(backend, queue, worker)
    finally:
        await backend.close()


async def fetch_until_empty(
    backend: Any, queue: str, worker: str, limit: int = 5
) -> tuple[list[tuple[str, int]], list[bool]]:
    leased: list[tuple[str, int]] = []
    applied: list[bool] = []
    while batch := await backend.fetch([queue], limit, worker, lease=60):
        leased.extend((d.id, d.attempt) for d in batch)
        outcomes = [Outcome(d.id, d.attempt, "succeeded", result_ttl=3600) for d in batch]
        applied.extend(await backend.settle(outcomes))
    return leased, applied
