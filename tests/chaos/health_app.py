"""The App the health-probe tests run in real worker processes: a task that blocks the
worker's event loop with a sync call (the bug a liveness probe is there to catch)."""

from __future__ import annotations

import time

import pigeon


async def block(seconds: float) -> None:
    # On purpose: a sync call inside an async task blocks the loop.
    time.sleep(seconds)  # noqa: ASYNC251


def register(app: pigeon.App) -> pigeon.App:
    app.task(name="health.block", lease=60.0, retries=0)(block)
    return app


app = register(pigeon.App())
