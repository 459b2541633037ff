"""The App the benchmarks run: one no-op task, on the backend a URL names."""

from __future__ import annotations

import pigeon


def make_app(url: str) -> pigeon.App:
    app = pigeon.App(url)

    @app.task(name="noop")
    async def noop(i: int) -> int:
        return i

    return app
