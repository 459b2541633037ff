"""Bulk sends from sync code, with signatures, inside transactions, and when storing fails;
the pieces they are made of (ids made in bulk, the batcher's bulk requests)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

import pigeon
from pigeon.backends.redis import ENQUEUE_CHUNK, RedisBackend
from pigeon.backends.redis.client import Client
from pigeon.batching import Batcher
from pigeon.codec import Call
from pigeon.message import Message, new_id, new_ids
from pigeon.promise import MessagePromise
from pigeon.signing import HEADER, Signer, _Hmac
from pigeon.worker import Worker
from tests.servers import BACKEND_URLS, cleanup, make_url, require_server, scheme_of

from .conftest import StartWorker

KEY = "k" * 32


def test_new_ids_are_uuid7_unique_and_sort_in_the_order_made() -> None:
    made = [new_id(), *new_ids(10_000), new_id(), *new_ids(3), new_id()]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    for mid in made:
        parsed = uuid.UUID(mid)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert str(parsed) == mid
    assert new_ids(0) == []


def test_the_random_bits_of_bulk_ids_are_random() -> None:
    ids = new_ids(4_000)
    # the nibble after the variant bits takes its four values, every random hex digit its 16
    assert {mid[19] for mid in ids} == set("89ab")
    for at in (20, 21, 22, 24, 30, 35):
        assert len({mid[at] for mid in ids}) == 16, at
    assert len({mid[19:] for mid in ids}) == len(ids)


def test_encode_many_encodes_each_call_as_send_would() -> None:
    app = pigeon.App("memory://")

    @app.task
    async def plain(a: int, b: str = "b") -> None: ...

    @app.task
    async def keyword_only(a: int, *, loud: bool = False) -> None: ...

    @app.task
    async def varargs(a: int, /, *rest: int, **extra: str) -> None: ...

    cases: list[tuple[pigeon.Task[..., None], list[Call]]] = [
        (plain, [(1,), (2, "x"), {"a": 3}, {"b": "y", "a": 4}]),
        (plain, [(n,) for n in range(5)]),
        (keyword_only, [(1,), {"a": 2, "loud": True}]),
        (varargs, [(1,), (1, 2, 3), (4,)]),
    ]
    for task, calls in cases:
        raw_args, raw_kwargs = task.codec.encode_many(calls)
        for call, args, kwargs in zip(calls, raw_args, raw_kwargs, strict=True):
            one = task.codec.encode_args(*((call, {}) if isinstance(call, tuple) else ((), call)))
            assert (bytes(args), bytes(kwargs)) == (bytes(one[0]), bytes(one[1]))

    @app.task
    async def needs_flag(a: int, *, flag: bool) -> None: ...

    with pytest.raises(pigeon.EncodeError, match=r"calls\[1\]: .*missing a required argument"):
        needs_flag.codec.encode_many([{"a": 1, "flag": True}, (2,)])
    with pytest.raises(pigeon.EncodeError, match=r"calls\[0\]: .*missing a required argument"):
        needs_flag.codec.encode_many([(1,), (2,)])


def test_the_prepared_hmac_is_hmac_sha256() -> None:
    for key in (b"k" * 16, b"x" * 64, b"y" * 65, bytes(range(256))):
        prepared = _Hmac(key)
        for message in (b"", b"abc", b"m" * 1000):
            assert prepared.hexdigest(message) == hmac.new(key, message, hashlib.sha256).hexdigest()


def test_send_many_from_sync_code_blocks_until_stored() -> None:
    with pigeon.App("memory://") as app:

        @app.task
        def add(a: int, b: int) -> int:
            return a + b

        promises = add.send_many([(1, 2), (3, 4), {"a": 5, "b": 6}])
        stats = app.backend_call_sync(lambda b: b.stats())
        assert stats.queues["default"].pending == 3
        ids = [p.id for p in promises if isinstance(p, MessagePromise)]
        stored = app.backend_call_sync(lambda b: b.inspect(ids[2]))
        assert stored is not None
        assert stored.state == "pending"
        assert add.fire_many((n, n) for n in range(5)) is None
        assert app.backend_call_sync(lambda b: b.stats()).queues["default"].pending == 8


async def test_bulk_sends_are_signed_and_run_on_a_signed_worker() -> None:
    app = pigeon.App("memory://", secret=KEY)

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    promises = add.send_many((n, 1) for n in range(20))
    await app.flush()
    signer = Signer([KEY])
    for promise in promises[:3]:
        info = await app.backend_call(lambda b, p=promise: b.inspect(p.id))
        assert info is not None
        assert info.body is not None
        message = pigeon.codec.decode_message(info.body)
        assert HEADER in message.headers
        assert signer.check(message) is None
    worker = Worker(app, concurrency=4)
    running = asyncio.create_task(worker.run())
    try:
        assert await asyncio.wait_for(pigeon.Promise.all(promises), 10) == [
            n + 1 for n in range(20)
        ]
    finally:
        worker.stop()
        assert await running == 0
        await app.close()


async def test_when_storing_fails_every_promise_of_the_bulk_rejects(app: pigeon.App) -> None:
    @app.task
    async def noop(n: int) -> None:
        pass

    backend = await app.open()

    async def refuse(messages: object) -> list[str]:
        raise pigeon.BackendError("the broker is down")

    backend.enqueue = refuse
    promises = noop.send_many((n,) for n in range(3))
    for promise in promises:
        with pytest.raises(pigeon.BackendError, match="the broker is down"):
            await promise.sent()


async def test_a_bulk_request_shares_batches_with_single_ones_and_keeps_order() -> None:
    calls: list[list[int]] = []

    async def call(items: list[int]) -> list[int]:
        calls.append(items)
        return [10 * i for i in items]

    batcher: Batcher[int, int] = Batcher(call, limit=4)
    one = batcher.submit(1)
    many = batcher.submit_many([2, 3, 4, 5, 6])
    last = batcher.submit(7)
    empty = batcher.submit_many([])
    await batcher.drain()
    assert calls == [[1, 2, 3, 4], [5, 6, 7]]
    assert (one.result(), many.result(), last.result(), empty.result()) == (
        10,
        [20, 30, 40, 50, 60],
        70,
        [],
    )


async def test_send_many_runs_on_an_in_process_worker(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    @app.task
    async def square(n: int) -> int:
        return n * n

    await start_worker()
    promises = square.send_many((n,) for n in range(100))
    assert await asyncio.wait_for(pigeon.Promise.all(promises), 10) == [n * n for n in range(100)]


def test_send_many_in_a_sqlite_transaction_exists_only_once_committed(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    with pigeon.App(f"sqlite:///{db}") as app:

        @app.task
        def receipt(order: int) -> int:
            return order

        app.backend_call_sync(lambda b: b.stats())  # the schema exists
        conn = sqlite3.connect(db)
        try:
            with app.transaction(conn):
                promises = receipt.send_many((n,) for n in range(5))
                receipt.fire_many([(99,)])
            ids = [p.id for p in promises if isinstance(p, MessagePromise)]
            assert len(ids) == 5
            assert app.backend_call_sync(lambda b: b.inspect(ids[0])) is None  # not committed
            conn.commit()
            assert app.backend_call_sync(lambda b: b.stats()).queues["default"].pending == 6

            with app.transaction(conn):
                dropped = receipt.send_many([(7,), (8,)])
            conn.rollback()
            for promise in dropped:
                assert app.backend_call_sync(lambda b, p=promise: b.inspect(p.id)) is None
        finally:
            conn.close()


def test_a_message_is_not_tracked_by_the_cyclic_garbage_collector() -> None:
    import gc

    assert not gc.is_tracked(Message(id="a", task="t", headers={"k": "v"}))


@pytest.fixture
async def redis_backend(tmp_path: Path) -> AsyncIterator[RedisBackend]:
    [template] = [u for u in BACKEND_URLS if scheme_of(u) == "redis"] or [""]
    if not template:
        pytest.skip("redis:// is not among the test backends")
    url = make_url(template, tmp_path)
    require_server(url)
    backend = RedisBackend(url)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
        await cleanup(url)


@pytest.mark.parametrize("fault", [RedisConnectionError("dropped"), NoScriptError("NOSCRIPT")])
async def test_redis_sends_a_whole_enqueue_pipeline_again_after_a_fault(
    redis_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch, fault: Exception
) -> None:
    # The first try stores two chunks of five, then fails (a dropped connection, or a server
    # that forgot its scripts); the retry sends all five, and each id is stored once.
    tries = 0
    pipeline = Client._pipeline

    async def faulty(self: Client, commands: Iterator[bytes]) -> list[Any]:
        nonlocal tries
        tries += 1
        if tries == 1:
            await pipeline(self, iter([next(commands), next(commands)]))
            raise fault
        return await pipeline(self, commands)

    monkeypatch.setattr(Client, "_pipeline", faulty)
    messages = [Message(id=mid, task="t", queue="q") for mid in new_ids(5 * ENQUEUE_CHUNK)]
    assert await redis_backend.enqueue(messages) == [m.id for m in messages]
    assert tries == 2
    assert (await redis_backend.stats()).queues["q"].pending == len(messages)
