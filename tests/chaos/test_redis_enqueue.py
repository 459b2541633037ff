"""The Redis backend's id mark: a bulk send of ids above every id stored is stored without
looking each id up (counted on a private redis-server, whose command counts no other test
moves), every other batch is looked up id by id, and ids are compared by their bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon.backends.redis import ENQUEUE_CHUNK, RedisBackend
from pigeon.backends.redis.client import script_prelude
from pigeon.message import Message, new_ids
from tests.chaos.redis_server import RedisServer, private_redis
from tests.servers import BACKEND_URLS, require_server, scheme_of


@pytest.fixture
async def private(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, RedisBackend]]:
    with private_redis(tmp_path / "redis") as server:
        backend = RedisBackend(server.url)
        try:
            await backend.open()
            yield server, backend
        finally:
            await backend.close()


def lookups(server: RedisServer) -> int:
    with server.control() as client:
        stats = client.info("commandstats").get("cmdstat_exists", {"calls": 0})
        client.config_resetstat()
    return int(stats["calls"])


async def test_a_bulk_send_of_new_ids_is_stored_without_looking_them_up(
    private: tuple[RedisServer, RedisBackend],
) -> None:
    server, backend = private
    messages = [Message(id=mid, task="t", queue="q") for mid in new_ids(3 * ENQUEUE_CHUNK)]
    await backend.enqueue(messages[:1])  # the first enqueue sets the mark, with a lookup
    lookups(server)

    await backend.enqueue(messages[1:])  # above the mark: several chunks, no lookup
    assert lookups(server) == 0

    await backend.enqueue(messages)  # at or below it: each id looked up, none stored again
    assert lookups(server) == len(messages)
    older = [Message(id=mid, task="t", queue="q") for mid in new_ids(2)]
    newer = [Message(id=mid, task="t", queue="q") for mid in new_ids(2)]
    await backend.enqueue(newer)
    lookups(server)
    await backend.enqueue(older)  # made before the last ids stored: looked up
    assert lookups(server) == len(older)
    assert (await backend.stats()).queues["q"].pending == len(messages) + 4


@pytest.fixture(scope="module")
def shared_server() -> Iterator[redis.Redis]:
    [template] = [u for u in BACKEND_URLS if scheme_of(u) == "redis"] or [""]
    if not template:
        pytest.skip("redis:// is not among the test backends")
    require_server(template)
    client = redis.Redis.from_url(template.split("?")[0])
    try:
        yield client
    finally:
        client.close()


ids = st.text(max_size=12) | st.uuids().map(str)


@settings(max_examples=300, deadline=None)
@given(a=ids, b=ids)
def test_the_id_mark_compares_ids_byte_by_byte(shared_server: redis.Redis, a: str, b: str) -> None:
    # common.lua's after(a, b), which the id mark relies on, against Python's order of the
    # UTF-8 bytes (Lua's own < follows the server's locale). Read-only: nothing is written.
    script = script_prelude() + "\nreturn after(ARGV[1], ARGV[2]) and 1 or 0"
    above = shared_server.eval(script, 1, "{pigeon-test-order}:", a, b)
    assert above == int(a.encode() > b.encode())
