"""Signed messages, secrets that never print, and payload limits on both sides."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

import pigeon
from pigeon.cli import cli
from pigeon.signing import HEADER
from pigeon.worker import Worker

KEY = "k" * 32
OLD_KEY = "o" * 32


@pytest.fixture
async def signed() -> AsyncIterator[pigeon.App]:
    app = pigeon.App("memory://", secret=KEY)
    yield app
    await app.close()


async def run_worker(app: pigeon.App) -> tuple[Worker, asyncio.Task[int]]:
    worker = Worker(app, concurrency=4)
    return worker, asyncio.create_task(worker.run())


async def dead_reason(app: pigeon.App, mid: str) -> str:
    async with asyncio.timeout(5):
        while True:
            letters = await app.backend_call(lambda b: b.dead_letters())
            found = [d.reason for d in letters if d.id == mid]
            if found:
                return found[0]
            await asyncio.sleep(0.01)


async def test_signed_messages_carry_a_signature_and_run(signed: pigeon.App) -> None:
    @signed.task
    async def add(a: int, b: int) -> int:
        return a + b

    worker, running = await run_worker(signed)
    p = add.options(delay=0.05).send(1, 2)
    await p.sent()
    info = await signed.backend_call(lambda b: b.inspect(p.id))
    assert info is not None
    assert info.body is not None
    assert HEADER in pigeon.codec.decode_message(info.body).headers
    assert await p == 3
    worker.stop()
    assert await running == 0


@pytest.mark.parametrize("tamper", ["unsigned", "forged", "tampered", "unknown key"])
async def test_unsigned_forged_or_tampered_messages_are_dead_lettered_never_run(
    signed: pigeon.App, tamper: str
) -> None:
    ran: list[int] = []

    @signed.task(name="add")
    async def add(a: int, b: int) -> int:
        ran.append(a)
        return a + b

    assert signed.signer is not None
    good = signed.signer.sign(add.message((1, 2), {}))
    if tamper == "unsigned":
        bad = msgspec.structs.replace(good, headers={})
    elif tamper == "forged":
        forged = good.headers[HEADER][:9] + "0" * 64
        bad = msgspec.structs.replace(good, headers={HEADER: forged})
    elif tamper == "tampered":
        bad = msgspec.structs.replace(good, kwargs=msgspec.Raw(b'{"a":100,"b":2}'))
    else:
        other = pigeon.App("memory://", secret="x" * 32)
        assert other.signer is not None
        bad = other.signer.sign(msgspec.structs.replace(good, headers={}))
    # Written straight to the backend, as someone with access to the broker could.
    await (await signed.open()).enqueue([bad])
    worker, running = await run_worker(signed)
    reason = await dead_reason(signed, bad.id)
    assert reason.startswith("BadSignature: ")
    assert await add.send(5, 5) == 10  # the worker keeps going
    worker.stop()
    assert await running == 0
    assert ran == [5]  # the bad message never ran


async def test_key_rotation_old_signatures_still_verify() -> None:
    old = pigeon.App("memory://", secret=OLD_KEY)
    rotated = pigeon.App("memory://", secret=[KEY, OLD_KEY])

    @rotated.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    assert old.signer is not None
    message = old.signer.sign(add.message((2, 2), {}))
    await (await rotated.open()).enqueue([message])
    worker, running = await run_worker(rotated)
    assert await rotated.promise(message.id, add) == 4
    worker.stop()
    assert await running == 0
    await rotated.close()


def test_a_short_secret_is_refused_with_how_to_make_one() -> None:
    with pytest.raises(pigeon.ConfigError, match="at least 16 bytes"):
        pigeon.App("memory://", secret="short")


def test_pigeon_secret_env_signs_with_the_first_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIGEON_SECRET", f"{KEY},{OLD_KEY}")
    assert pigeon.App("memory://").signer is not None
    monkeypatch.delenv("PIGEON_SECRET")
    assert pigeon.App("memory://").signer is None


async def test_a_secret_argument_reaches_the_task_but_never_prints(
    app: pigeon.App, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    @app.task
    async def login(user: str, password: pigeon.Secret[str]) -> str:
        seen.append(password.reveal())
        raise ValueError(f"login failed for {user} with {password}")

    caplog.set_level(logging.DEBUG)
    worker, running = await run_worker(app)
    with pytest.raises(pigeon.TaskError) as raised:
        await login.send("ann", pigeon.Secret("hunter2"))
    worker.stop()
    assert await running == 0
    assert seen == ["hunter2"]
    assert "hunter2" not in str(raised.value) + raised.value.traceback
    assert "with ***" in raised.value.message
    assert "hunter2" not in caplog.text
    assert repr(pigeon.Secret("hunter2")) == "Secret('***')"


async def test_a_secret_is_checked_like_any_argument(app: pigeon.App) -> None:
    @app.task
    async def pin(code: pigeon.Secret[int]) -> None: ...

    with pytest.raises(pigeon.EncodeError):
        pin.send(pigeon.Secret("not a number"))  # type: ignore[arg-type]
    with pytest.raises(pigeon.EncodeError):
        pin.send(1234)  # type: ignore[arg-type]


def test_inspect_shows_secrets_as_stars(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    app = pigeon.App(url)

    @app.task(name="login")
    def login(user: str, password: pigeon.Secret[str]) -> None: ...

    p = login.options(delay=3600).send("ann", pigeon.Secret("hunter2"))
    app.close_sync()
    result = CliRunner().invoke(cli, ["inspect", p.id, "--url", url])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert '"***"' in result.output


async def test_payload_over_the_limit_is_refused_at_send_and_again_on_the_worker() -> None:
    sender = pigeon.App("memory://", max_payload=10_000_000)

    @sender.task(name="blob")
    async def blob(data: str) -> int:
        return len(data)

    strict = pigeon.App("memory://", max_payload=1000)
    strict.task(name="blob")(blob.fn)
    with pytest.raises(pigeon.EncodeError, match="over the limit of 1,000 bytes"):
        strict.tasks["blob"].send("x" * 2000)
    message = blob.message(("x" * 2000,), {})
    await (await strict.open()).enqueue([message])
    worker, running = await run_worker(strict)
    reason = await dead_reason(strict, message.id)
    assert reason.startswith("PayloadTooLarge: ")
    assert "1,000" in reason
    worker.stop()
    assert await running == 0
    await strict.close()
