"""Schedule marks (what the scheduler has sent): per schedule name, the backend time up to
which every tick has been sent; stored exactly, read back in one call, and never moved back."""

from __future__ import annotations

import asyncio

from pigeon.backends import Backend


async def test_marks_are_stored_and_read_back_exactly(backend: Backend) -> None:
    now = await backend.time()
    await backend.mark_schedules({"report": now, "clean": 1_700_000_000.123456})

    assert await backend.schedules(["report", "clean"]) == {
        "report": now,
        "clean": 1_700_000_000.123456,
    }
    assert await backend.schedules(["clean"]) == {"clean": 1_700_000_000.123456}


async def test_a_schedule_never_marked_is_absent(backend: Backend) -> None:
    assert await backend.schedules(["never"]) == {}
    assert await backend.schedules([]) == {}
    await backend.mark_schedules({})
    await backend.mark_schedules({"seen": 1000.5})

    assert await backend.schedules(["seen", "never"]) == {"seen": 1000.5}


async def test_a_mark_only_moves_forward(backend: Backend) -> None:
    await backend.mark_schedules({"a": 1000.5, "b": 2000.0})
    await backend.mark_schedules({"a": 1010.25, "b": 1990.0})  # b: a stalled ex-leader, late

    assert await backend.schedules(["a", "b"]) == {"a": 1010.25, "b": 2000.0}
    await backend.mark_schedules({"a": 1010.25})  # the same mark again changes nothing
    assert await backend.schedules(["a"]) == {"a": 1010.25}


async def test_many_schedules_are_marked_and_read_in_one_call_each(backend: Backend) -> None:
    marks = {f"schedule-{n}": 1000.0 + n / 4 for n in range(2000)}
    await backend.mark_schedules(marks)
    await backend.mark_schedules({name: mark - 1 for name, mark in marks.items()})

    assert await backend.schedules([*marks, "unknown"]) == marks


async def test_concurrent_marks_keep_the_greatest(backend: Backend) -> None:
    await asyncio.gather(*(backend.mark_schedules({"tick": 1000.0 + n}) for n in range(20)))

    assert await backend.schedules(["tick"]) == {"tick": 1019.0}


async def test_marks_made_through_one_connection_are_read_through_another(
    backend: Backend, second_connection: Backend
) -> None:
    await backend.mark_schedules({"tick": 1000.5})
    await second_connection.mark_schedules({"tick": 999.0, "other": 5.0})

    assert await second_connection.schedules(["tick", "other"]) == {"tick": 1000.5, "other": 5.0}
    assert await backend.schedules(["tick", "other"]) == {"tick": 1000.5, "other": 5.0}


async def test_sweep_keeps_the_marks(backend: Backend) -> None:
    await backend.mark_schedules({"tick": 1000.5})  # long past, on any backend clock
    await backend.sweep()

    assert await backend.schedules(["tick"]) == {"tick": 1000.5}
