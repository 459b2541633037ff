"""Listing messages (``list_messages``): filters, the time range, cursor paging, history kept
as long as outcomes are, and rows that follow their message from state to state."""

from __future__ import annotations

import pytest

from pigeon.backends import Backend
from pigeon.backends.base import LIST_SCAN, MessagePage, MessageQuery, MessageRow
from pigeon.backends.shared import id_time
from pigeon.message import Outcome, new_id

from .messages import QUEUE, dead, failed, make_message, make_messages, settle_as, succeeded
from .polling import eventually


@pytest.fixture(autouse=True)
def _lists(backend: Backend) -> None:
    if not hasattr(backend, "list_messages"):
        pytest.skip(f"{type(backend).__name__} has no list_messages yet")


async def everything(backend: Backend, **fields: object) -> list[MessageRow]:
    """Every row ``fields`` match, following the cursor from page to page."""
    rows: list[MessageRow] = []
    cursor = None
    for _ in range(1000):
        page = await backend.list_messages(MessageQuery(cursor=cursor, **fields))  # type: ignore[arg-type]
        rows.extend(page.rows)
        if page.next is None:
            return rows
        assert cursor is None or page.next < cursor, "a cursor must move down the ids"
        cursor = page.next
    raise AssertionError("paging did not end")


def ids(rows: list[MessageRow]) -> list[str]:
    return [r.id for r in rows]


async def test_lists_every_state_newest_first(backend: Backend) -> None:
    """One message in each state, each listed once with its state, queue and task."""
    parent = make_message("elsewhere")
    ran = {state: make_message(f"run-{state}") for state in ("succeeded", "failed", "dead")}
    pending, scheduled = make_message(), make_message(delay=100)
    waiting = make_message(after=parent.id, mode="then")
    leased = make_message("lease-me")
    cancelled = make_message("cancel-me")
    sent = [parent, *ran.values(), pending, scheduled, waiting, leased, cancelled]
    await backend.enqueue(sent)
    for state, m in ran.items():
        [d] = await backend.fetch([m.queue], 1, "w")
        assert await backend.settle([settle_as(d, state)]) == [True]
    assert len(await backend.fetch(["lease-me"], 1, "w")) == 1
    assert await backend.cancel([cancelled.id]) == [cancelled.id]

    rows = await everything(backend)

    assert ids(rows) == sorted((m.id for m in sent), reverse=True)
    states = {r.id: r.state for r in rows}
    assert states == {
        parent.id: "pending",
        ran["succeeded"].id: "succeeded",
        ran["failed"].id: "failed",
        ran["dead"].id: "dead",
        pending.id: "pending",
        scheduled.id: "scheduled",
        waiting.id: "waiting",
        leased.id: "leased",
        cancelled.id: "cancelled",
    }
    by_id = {r.id: r for r in rows}
    assert all(by_id[m.id].queue == m.queue and by_id[m.id].task == "t" for m in sent)
    assert by_id[ran["failed"].id].error == "ValueError"
    assert by_id[ran["dead"].id].error == "Poison"
    assert by_id[ran["succeeded"].id].error is None


async def test_each_state_filter_lists_only_its_state(backend: Backend) -> None:
    done, broken, pending = make_message("a"), make_message("b"), make_message()
    await backend.enqueue([done, broken, pending])
    [d] = await backend.fetch(["a"], 1, "w")
    [b] = await backend.fetch(["b"], 1, "w")
    await backend.settle([succeeded(d), failed(b)])

    assert ids(await everything(backend, state="succeeded")) == [done.id]
    assert ids(await everything(backend, state="failed")) == [broken.id]
    assert ids(await everything(backend, state="pending")) == [pending.id]
    assert await everything(backend, state="leased") == []
    assert await everything(backend, state="dead") == []


async def test_queue_and_task_filters(backend: Backend) -> None:
    a1, a2 = make_message("qa", task="ta"), make_message("qa", task="tb")
    b1 = make_message("qb", task="ta")
    await backend.enqueue([a1, a2, b1])
    [d] = await backend.fetch(["qa"], 1, "w")
    await backend.settle([succeeded(d)])  # one finished, one live in queue qa

    assert ids(await everything(backend, queue="qa")) == [a2.id, a1.id]
    assert ids(await everything(backend, task="ta")) == [b1.id, a1.id]
    assert ids(await everything(backend, queue="qa", task="tb")) == [a2.id]
    assert await everything(backend, queue="nowhere") == []


async def test_key_filter_finds_the_message_its_key_stands_for(backend: Backend) -> None:
    keyed, other = make_message(key="order-7"), make_message(key="order-8")
    await backend.enqueue([keyed, other, make_message()])
    assert ids(await everything(backend, key="order-7")) == [keyed.id]
    [d] = await backend.fetch([QUEUE], 1, "w")
    await backend.settle([succeeded(d)])
    assert ids(await everything(backend, key="order-7")) == [keyed.id]
    assert await everything(backend, key="no-such-key") == []


async def test_error_type_filter(backend: Backend) -> None:
    broken, poisoned, fine = make_messages(3)
    await backend.enqueue([broken, poisoned, fine])
    deliveries = {d.id: d for d in await backend.fetch([QUEUE], 3, "w")}
    await backend.settle(
        [
            failed(deliveries[broken.id]),
            dead(deliveries[poisoned.id]),
            succeeded(deliveries[fine.id]),
        ]
    )
    assert ids(await everything(backend, error="ValueError")) == [broken.id]
    assert ids(await everything(backend, error="Poison")) == [poisoned.id]
    assert ids(await everything(backend, error="Poison", state="dead")) == [poisoned.id]
    assert await everything(backend, error="KeyError") == []


async def test_id_prefix_filter(backend: Backend) -> None:
    sent = make_messages(3)
    await backend.enqueue(sent)
    target = sent[1]
    assert ids(await everything(backend, prefix=target.id)) == [target.id]
    assert ids(await everything(backend, prefix=target.id[:-4].upper())) == [target.id]
    assert await everything(backend, prefix="ffffffff") == []


async def test_time_range_is_the_time_the_message_was_made(backend: Backend) -> None:
    old = make_message(id=_id_at(1_000_000.0))
    middle = make_message(id=_id_at(2_000_000.0))
    new = make_message()
    await backend.enqueue([old, middle, new])

    assert ids(await everything(backend, since=1_500_000.0)) == [new.id, middle.id]
    assert ids(await everything(backend, until=1_500_000.0)) == [old.id]
    assert ids(await everything(backend, since=1_000_000.0, until=2_000_000.0)) == [
        middle.id,
        old.id,
    ]
    assert await everything(backend, since=2_000_000.5, until=2_000_001.0) == []


def _id_at(seconds: float) -> str:
    """A UUIDv7 id made at ``seconds``, with the random rest of a fresh one."""
    h = f"{int(seconds * 1000):012x}"
    made = f"{h[:8]}-{h[8:12]}{new_id()[13:]}"
    assert id_time(made) == pytest.approx(seconds)
    return made


async def test_paging_through_more_rows_than_a_page(backend: Backend) -> None:
    """Pages of 7 cover 40 messages, half of them finished: no duplicate, no gap, newest
    first, and the last page says there is nothing more."""
    sent = make_messages(40)
    await backend.enqueue(sent)
    deliveries = await backend.fetch([QUEUE], 20, "w")
    await backend.settle([succeeded(d) for d in deliveries])

    pages: list[MessagePage] = []
    cursor = None
    while True:
        page = await backend.list_messages(MessageQuery(cursor=cursor, limit=7))
        pages.append(page)
        if page.next is None:
            break
        cursor = page.next
    rows = [r for p in pages for r in p.rows]
    assert ids(rows) == sorted((m.id for m in sent), reverse=True)
    assert len(pages) >= 6
    assert all(len(p.rows) <= 7 for p in pages)


async def test_a_filter_matching_little_pages_past_unmatched_entries(backend: Backend) -> None:
    """More entries than one page walks, none of them matching the state asked for: a page
    may be empty but its cursor goes on, down to the one that matches."""
    first = make_message("other")
    await backend.enqueue([first])
    [d] = await backend.fetch(["other"], 1, "w")
    await backend.settle([failed(d)])
    await backend.enqueue(make_messages(LIST_SCAN + 50))

    assert ids(await everything(backend, state="failed")) == [first.id]
    page = await backend.list_messages(MessageQuery(state="failed"))
    assert len(page.rows) <= 1


async def test_outcomes_past_their_ttl_drop_out_after_sweep(backend: Backend) -> None:
    short, long = make_messages(2)
    await backend.enqueue([short, long])
    a, b = await backend.fetch([QUEUE], 2, "w")
    by_id = {a.id: a, b.id: b}
    await backend.settle([succeeded(by_id[short.id], result_ttl=0.3), succeeded(by_id[long.id])])
    assert ids(await everything(backend)) == sorted([short.id, long.id], reverse=True)

    async def gone() -> bool:
        await backend.sweep()
        return ids(await everything(backend)) == [long.id]

    await eventually(gone, "the expired outcome to drop out of the listing")


async def test_messages_without_a_kept_outcome_leave_no_history(backend: Backend) -> None:
    fired = make_message(result_ttl=0)
    await backend.enqueue([fired])
    assert ids(await everything(backend)) == [fired.id]
    [d] = await backend.fetch([QUEUE], 1, "w")
    await backend.settle([Outcome(d.id, d.attempt, "succeeded", result_ttl=0)])
    assert await everything(backend) == []


async def test_a_message_moves_between_state_filters_as_it_runs(backend: Backend) -> None:
    m = make_message(max_attempts=2)
    await backend.enqueue([m])
    assert ids(await everything(backend, state="pending")) == [m.id]

    [d] = await backend.fetch([QUEUE], 1, "w")
    assert await everything(backend, state="pending") == []
    assert ids(await everything(backend, state="leased")) == [m.id]

    await backend.settle([dead(d)])
    assert await everything(backend, state="leased") == []
    assert ids(await everything(backend, state="dead")) == [m.id]

    assert await backend.requeue([m.id]) == 1
    assert await everything(backend, state="dead") == []
    assert ids(await everything(backend, state="pending")) == [m.id]
    [d] = await backend.fetch([QUEUE], 1, "w")
    await backend.settle([succeeded(d)])
    assert ids(await everything(backend, state="succeeded")) == [m.id]
    assert ids(await everything(backend)) == [m.id]


async def test_purged_dead_letters_and_messages_leave_the_listing(backend: Backend) -> None:
    gone, dying = make_messages(2)
    await backend.enqueue([gone, dying])
    [d] = await backend.fetch([QUEUE], 1, "w")
    await backend.settle([dead(d, result_ttl=0)])
    assert await backend.purge(QUEUE) == 1
    assert ids(await everything(backend)) == [d.id]
    assert await backend.purge_dead([d.id]) == 1
    assert await everything(backend) == []


async def test_a_limit_outside_a_page_is_refused(backend: Backend) -> None:
    with pytest.raises(ValueError, match="a page holds"):
        await backend.list_messages(MessageQuery(limit=0))
