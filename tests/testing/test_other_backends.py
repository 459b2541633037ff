"""The in-process worker on a backend the user names (here SQLite): the same drain, and a
clear error for the clock, which only memory:// lets a test move."""

from __future__ import annotations

from pathlib import Path

import pytest

from pigeon.errors import ConfigError
from pigeon.testing import InProcessWorker
from tests.testing import shop


@pytest.fixture
def pigeon_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


async def test_drain_runs_on_sqlite_too(pigeon_worker: InProcessWorker) -> None:
    p = shop.add.send(1, 2).then(shop.double)
    ran = await pigeon_worker.drain()
    assert [r.task for r in ran] == ["shop.add", "shop.double"]
    assert await p == 6
    assert pigeon_worker.clock is None
    with pytest.raises(ConfigError, match="memory://"):
        await pigeon_worker.advance(60)
