"""Progress reports of running messages, and the shared event log."""

from __future__ import annotations

import asyncio
import time

from pigeon.backends import Backend
from pigeon.message import Event, Progress

from .polling import clock_passes


async def test_the_latest_report_of_each_message_is_kept(backend: Backend) -> None:
    await backend.report([Progress("a", 0.1, "one"), Progress("b", None, "b", at=5.0)], ttl=60)
    await backend.report([Progress("a", 0.5, "five")], ttl=60)

    found = await backend.progress(["a", "b", "unknown"])

    assert found == {"a": Progress("a", 0.5, "five"), "b": Progress("b", None, "b", at=5.0)}


async def test_a_report_runs_out_after_its_ttl(backend: Backend) -> None:
    await backend.report([Progress("a", 0.1)], ttl=0.3)
    reported_at = await backend.time()
    assert "a" in await backend.progress(["a"])
    await clock_passes(backend, reported_at + 0.3 + 0.005)
    assert await backend.progress(["a"]) == {}


async def test_events_are_read_in_order_from_a_cursor(backend: Backend) -> None:
    cursor, none = await backend.read_events(None)
    assert none == []
    sent = [
        Event("sent", "m1", "t", "q", at=1.0),
        Event("started", "m1", "t", "q", at=2.0, attempt=1, worker="w"),
        Event("failed", "m1", "t", "q", at=3.0, attempt=1, worker="w", error="E: boom"),
    ]
    await backend.publish(sent[:2])
    await backend.publish(sent[2:])

    cursor, first = await backend.read_events(cursor, limit=2)
    cursor, rest = await backend.read_events(cursor)
    assert first + rest == sent
    assert await backend.read_events(cursor) == (cursor, [])


async def test_reading_from_the_end_skips_older_events(backend: Backend) -> None:
    await backend.publish([Event("sent", "old")])
    cursor, events = await backend.read_events(None)
    assert events == []
    await backend.publish([Event("sent", "new")])
    _, events = await backend.read_events(cursor)
    assert [e.id for e in events] == ["new"]


async def test_a_reader_waits_for_the_next_event_from_another_client(
    backend: Backend, second_connection: Backend
) -> None:
    cursor, _ = await backend.read_events(None)

    async def publish_later() -> None:
        await asyncio.sleep(0.2)
        await second_connection.publish([Event("succeeded", "m2")])

    begun = time.monotonic()
    publisher = asyncio.create_task(publish_later())
    _, events = await backend.read_events(cursor, wait=3.0)
    await publisher
    assert [e.id for e in events] == ["m2"]
    assert time.monotonic() - begun < 2.0


async def test_a_reader_with_nothing_new_returns_empty_after_its_wait(backend: Backend) -> None:
    cursor, _ = await backend.read_events(None)
    begun = time.monotonic()
    assert await backend.read_events(cursor, wait=0.2) == (cursor, [])
    assert 0.15 <= time.monotonic() - begun < 2.0
