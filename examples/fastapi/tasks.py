"""The example's tasks: the module both the web app and ``pigeon worker`` import.

``pigeon worker examples.fastapi.tasks:app`` runs them; the App's backend is ``PIGEON_URL``
(else ``sqlite:///pigeon.db`` in the current directory), the same for both processes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pigeon

app = pigeon.App()


@dataclass
class Report:
    title: str
    pages: int
    words: int


@app.task(name="example.build_report", timeout=300)
async def build_report(title: str, pages: int, seconds_per_page: float = 0.5) -> Report:
    """Write a report page by page, telling the sender how far it got after each page."""
    words = 0
    for page in range(1, pages + 1):
        await asyncio.sleep(seconds_per_page)  # the real work would go here
        words += 250
        pigeon.current().progress(page / pages, f"page {page}/{pages}")
    return Report(title, pages, words)


@app.task(name="example.record_visit")
async def record_visit(path: str) -> None:
    """Fire-and-forget bookkeeping: nobody waits for it."""
