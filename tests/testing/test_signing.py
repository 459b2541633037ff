"""A worker whose App has a secret refuses unsigned messages, in the plugin as anywhere."""

from __future__ import annotations

import pytest

import pigeon
from pigeon.testing import InProcessWorker

signed = pigeon.App("memory://", secret="a-test-secret-of-32-bytes-or-so")


@signed.task(name="signed.echo")
async def echo(text: str) -> str:
    return text


@pytest.fixture
def pigeon_app() -> pigeon.App:
    return signed


async def test_signed_messages_run_and_unsigned_ones_are_dead_lettered(
    pigeon_worker: InProcessWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = echo.send("signed")
    monkeypatch.delenv("PIGEON_SECRET", raising=False)
    unsigned = pigeon.App("memory://")
    unsigned.backend = pigeon_worker.backend  # a sender without the secret, on one store

    @unsigned.task(name="signed.echo")
    async def forged(text: str) -> str: ...

    bad = forged.send("forged")
    await bad.sent()
    ran = await pigeon_worker.drain()
    assert sorted((r.id, r.state) for r in ran) == sorted([(ok.id, "succeeded"), (bad.id, "dead")])
    assert await ok == "signed"
    with pytest.raises(pigeon.TaskError) as raised:
        await bad
    assert raised.value.type == "BadSignature"
    await unsigned.close()
