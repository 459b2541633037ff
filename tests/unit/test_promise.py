"""Promises as users see them: JavaScript's Promise semantics (DESIGN.md section 6), first over
local promises, then over the promises of real tasks run by an in-process worker.

The local cases translate test262's tests of ``Promise.all/any/race/allSettled`` and of
``then/catch/finally`` to Python: ``Deferred`` plays JavaScript's ``withResolvers``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import pytest

import pigeon
from pigeon import Promise, Settled
from pigeon.message import Message, new_id
from pigeon.worker import Worker

from .conftest import StartWorker
from .support import Deferred, eventually, outcome, rejected

# -------------------------------------------------------------------------------------------
# Promise.all
# -------------------------------------------------------------------------------------------


async def test_all_fulfils_in_input_order_even_when_inputs_settle_in_reverse() -> None:
    ds = [Deferred() for _ in range(3)]
    combined = Promise.all([d.promise for d in ds])
    waiting = asyncio.ensure_future(outcome(combined))
    for i in reversed(range(3)):
        ds[i].resolve(i + 1)
        await ds[i].settled()
    assert await waiting == (True, [1, 2, 3])


async def test_all_of_nothing_is_an_empty_list() -> None:
    assert await Promise.all([]) == []


async def test_all_accepts_any_iterable_and_plain_values_count_as_fulfilled() -> None:
    d = Deferred()
    combined = Promise.all(x for x in [1, d.promise, "three"])
    d.resolve(2)
    assert await combined == [1, 2, "three"]


async def test_all_rejects_with_the_first_rejection_without_waiting_for_the_rest() -> None:
    slow, failing, fine = Deferred(), Deferred(), Deferred()
    fine.resolve("ok")
    error = ValueError("first")
    failing.reject(error)
    async with asyncio.timeout(2):  # `slow` never settles: all() must not wait for it
        with pytest.raises(ValueError, match="first") as caught:
            await Promise.all([slow.promise, failing.promise, fine.promise])
    assert caught.value is error
    assert not slow.future.done()


async def test_all_ignores_rejections_after_the_first() -> None:
    first, second = Deferred(), Deferred()
    combined = Promise.all([first.promise, second.promise])
    waiting = asyncio.ensure_future(outcome(combined))
    error = ValueError("second rejects first")
    second.reject(error)
    assert await waiting == (False, error)
    first.reject(KeyError("later"))
    await first.settled()
    assert await outcome(combined) == (False, error)


# -------------------------------------------------------------------------------------------
# Promise.any
# -------------------------------------------------------------------------------------------


async def test_any_fulfils_with_the_first_fulfilment_ignoring_earlier_rejections() -> None:
    failing, slow, fast = Deferred(), Deferred(), Deferred()
    combined = Promise.any([failing.promise, slow.promise, fast.promise])
    waiting = asyncio.ensure_future(outcome(combined))
    failing.reject(ValueError("no"))
    await failing.settled()
    fast.resolve("fast")
    assert await waiting == (True, "fast")
    slow.resolve("slow")


async def test_any_rejects_with_aggregate_error_whose_errors_keep_input_order() -> None:
    ds = [Deferred() for _ in range(3)]
    errors = [ValueError(f"e{i}") for i in range(3)]
    combined = Promise.any([d.promise for d in ds])
    waiting = asyncio.ensure_future(outcome(combined))
    for i in reversed(range(3)):  # rejected in reverse order
        ds[i].reject(errors[i])
        await ds[i].settled()
    fulfilled, error = await waiting
    assert not fulfilled
    assert isinstance(error, pigeon.AggregateError)
    assert isinstance(error, pigeon.PigeonError)
    assert len(error.errors) == 3
    assert all(got is want for got, want in zip(error.errors, errors, strict=True))


async def test_any_of_nothing_rejects_with_an_empty_aggregate_error() -> None:
    with pytest.raises(pigeon.AggregateError) as caught:
        await Promise.any([])
    assert caught.value.errors == []


async def test_any_takes_a_plain_value_as_fulfilled() -> None:
    assert await Promise.any([rejected(ValueError("no")), 7]) == 7


# -------------------------------------------------------------------------------------------
# Promise.race
# -------------------------------------------------------------------------------------------


async def test_race_of_nothing_stays_pending() -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await Promise.race([])


async def test_race_settles_as_the_first_input_settles_and_ignores_the_rest() -> None:
    slow, fast = Deferred(), Deferred()
    combined = Promise.race([slow.promise, fast.promise])
    waiting = asyncio.ensure_future(outcome(combined))
    fast.resolve("fast")
    assert await waiting == (True, "fast")
    slow.resolve("slow")
    await slow.settled()
    assert await combined == "fast"


async def test_race_rejects_when_the_first_input_to_settle_rejects() -> None:
    slow, failing = Deferred(), Deferred()
    error = ValueError("first")
    combined = Promise.race([slow.promise, failing.promise])
    failing.reject(error)
    with pytest.raises(ValueError, match="first") as caught:
        await combined
    assert caught.value is error
    slow.resolve(1)


async def test_race_takes_a_plain_value_before_a_pending_promise() -> None:
    pending = Deferred()
    assert await Promise.race([pending.promise, 5]) == 5


async def test_race_among_settled_inputs_the_first_in_input_order_wins() -> None:
    error = ValueError("settled first in order")
    failed = rejected(error)
    done = Promise.resolve("later in order")
    await outcome(failed)
    await done
    assert await outcome(Promise.race([failed, done])) == (False, error)
    assert await outcome(Promise.race([done, failed])) == (True, "later in order")
    assert await outcome(Promise.race([failed, 5])) == (False, error)
    assert await outcome(Promise.race([5, failed])) == (True, 5)


async def test_race_counts_a_settled_but_unobserved_promise_as_settled() -> None:
    # A local promise whose handler has returned has settled, even if nobody awaited it yet.
    ran: list[str] = []
    error = ValueError("rejected, unobserved")

    def throw(_: object) -> None:
        ran.append("throw")
        raise error

    failed = Promise.resolve(None).then(throw)
    await eventually(lambda: ran)
    assert await outcome(Promise.race([failed, 5])) == (False, error)


async def test_resolve_is_already_settled_for_combinators() -> None:
    assert await Promise.race([Promise.resolve(1), 2]) == 1
    assert await Promise.any([Promise.resolve("a"), "b"]) == "a"


# -------------------------------------------------------------------------------------------
# Promise.all_settled
# -------------------------------------------------------------------------------------------


async def test_all_settled_never_rejects_and_gives_records_in_input_order() -> None:
    a, b = Deferred(), Deferred()
    error = ValueError("b failed")
    combined = Promise.all_settled([a.promise, b.promise, 3])
    b.reject(error)
    await b.settled()
    a.resolve(1)
    records = await combined
    assert records == [
        Settled("fulfilled", value=1),
        Settled("rejected", reason=error),
        Settled("fulfilled", value=3),
    ]
    assert records[1].reason is error
    assert all(isinstance(r, Settled) for r in records)


async def test_all_settled_of_nothing_is_an_empty_list() -> None:
    assert await Promise.all_settled([]) == []


async def test_all_settled_of_only_rejections_still_fulfils() -> None:
    errors = [ValueError("a"), KeyError("b")]
    records = await Promise.all_settled([rejected(e) for e in errors])
    assert [r.status for r in records] == ["rejected", "rejected"]
    assert [r.reason for r in records] == errors


# -------------------------------------------------------------------------------------------
# then / catch / finally_
# -------------------------------------------------------------------------------------------


async def test_then_return_value_fulfils_the_derived_promise() -> None:
    assert await Promise.resolve(2).then(lambda v: v * 10) == 20


async def test_then_awaits_a_returned_coroutine() -> None:
    async def later(v: int) -> int:
        await asyncio.sleep(0)
        return v + 1

    assert await Promise.resolve(2).then(later) == 3


async def test_then_raise_rejects_the_derived_promise() -> None:
    error = ValueError("handler failed")

    def throw(_: object) -> None:
        raise error

    with pytest.raises(ValueError, match="handler failed") as caught:
        await Promise.resolve(1).then(throw)
    assert caught.value is error


async def test_then_adopts_a_returned_promise_fulfilled_or_rejected() -> None:
    d = Deferred()
    derived = Promise.resolve(1).then(lambda _: d.promise)
    waiting = asyncio.ensure_future(outcome(derived))
    await asyncio.sleep(0)
    assert not waiting.done()  # adopting: pending until the returned promise settles
    d.resolve("adopted")
    assert await waiting == (True, "adopted")

    error = KeyError("adopted rejection")
    assert await outcome(Promise.resolve(1).then(lambda _: rejected(error))) == (False, error)


async def test_then_on_a_rejection_skips_the_handler_and_passes_it_through() -> None:
    error = ValueError("original")
    calls: list[object] = []
    derived = rejected(error).then(calls.append).then(calls.append)
    assert await outcome(derived) == (False, error)
    assert calls == []


async def test_catch_recovers_with_the_handler_value() -> None:
    error = ValueError("boom")
    seen: list[BaseException] = []

    def recover(exc: BaseException) -> str:
        seen.append(exc)
        return "recovered"

    assert await rejected(error).catch(recover).then(lambda v: v + "!") == "recovered!"
    assert seen == [error]
    assert seen[0] is error


async def test_catch_on_a_fulfilment_passes_the_value_through() -> None:
    calls: list[BaseException] = []
    assert await Promise.resolve(5).catch(calls.append) == 5
    assert calls == []


async def test_catch_raise_rejects_with_the_new_error() -> None:
    new = KeyError("new")

    def throw(_: BaseException) -> None:
        raise new

    assert await outcome(rejected(ValueError("old")).catch(throw)) == (False, new)


async def test_finally_gets_no_argument_and_passes_a_fulfilment_through() -> None:
    calls: list[str] = []

    def cleanup() -> str:  # takes no argument: calling it with one would reject
        calls.append("cleanup")
        return "ignored"

    assert await Promise.resolve(1).finally_(cleanup) == 1
    assert calls == ["cleanup"]


async def test_finally_passes_a_rejection_through() -> None:
    error = ValueError("kept")
    calls: list[str] = []
    derived = rejected(error).finally_(lambda: calls.append("cleanup"))
    assert await outcome(derived) == (False, error)
    assert calls == ["cleanup"]


async def test_finally_that_raises_rejects_with_its_error() -> None:
    new = RuntimeError("cleanup failed")

    def throw() -> None:
        raise new

    assert await outcome(Promise.resolve(1).finally_(throw)) == (False, new)
    assert await outcome(rejected(ValueError("old")).finally_(throw)) == (False, new)


async def test_finally_waits_for_a_returned_promise_and_adopts_its_rejection() -> None:
    d = Deferred()
    derived = Promise.resolve("value").finally_(lambda: d.promise)
    waiting = asyncio.ensure_future(outcome(derived))
    await asyncio.sleep(0)
    assert not waiting.done()
    d.resolve("ignored")
    assert await waiting == (True, "value")

    error = ValueError("cleanup rejected")
    assert await outcome(Promise.resolve(1).finally_(lambda: rejected(error))) == (False, error)


async def test_a_handler_returning_its_own_promise_rejects_with_type_error() -> None:
    # test262: "Chaining cycle detected": adopting itself would wait forever.
    holder: list[Promise[Any]] = []
    derived = Promise.resolve(1).then(lambda _: holder[0])
    holder.append(derived)
    async with asyncio.timeout(1):
        fulfilled, error = await outcome(derived)
    assert not fulfilled
    assert isinstance(error, TypeError)


async def test_handlers_attached_after_settlement_still_run_exactly_once() -> None:
    fulfilled = Promise.resolve(1)
    failed = rejected(ValueError("x"))
    await fulfilled
    await outcome(failed)
    calls: Counter[str] = Counter()
    derived = [
        fulfilled.then(lambda v: calls.update(["then"])),
        failed.catch(lambda e: calls.update(["catch"])),
        fulfilled.finally_(lambda: calls.update(["finally"])),
    ]
    # Handlers run without anyone awaiting the derived promises...
    await eventually(lambda: len(calls) == 3)
    # ...and awaiting them (even twice) runs nothing again.
    for p in derived:
        await outcome(p)
        await outcome(p)
    assert calls == {"then": 1, "catch": 1, "finally": 1}


async def test_handlers_run_in_the_order_they_were_attached() -> None:
    d = Deferred()
    order: list[int] = []
    derived = [d.promise.then(lambda v, i=i: order.append(i)) for i in range(5)]
    d.resolve(None)
    for p in derived:
        await p
    assert order == [0, 1, 2, 3, 4]


async def test_a_promise_settles_once_and_gives_the_same_outcome_every_time() -> None:
    value = object()
    made: list[object] = []

    def make(_: object) -> object:
        made.append(value)
        return value

    p = Promise.resolve(None).then(make)
    assert await p is value
    assert await p is value
    assert made == [value]

    error = ValueError("once")
    failed = rejected(error)
    assert await outcome(failed) == (False, error)
    assert await outcome(failed) == (False, error)


async def test_awaiting_is_bounded_by_asyncio_timeout_and_the_promise_survives() -> None:
    d = Deferred()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await d.promise
    d.resolve("later")
    assert await d.promise == "later"


def test_result_of_a_local_promise_from_sync_code() -> None:
    assert Promise.resolve(3).result(timeout=1) == 3
    with pytest.raises(pigeon.Timeout):
        Promise.race([]).result(timeout=0.05)


# -------------------------------------------------------------------------------------------
# Real tasks, run by an in-process worker on the memory:// backend
# -------------------------------------------------------------------------------------------


@dataclass
class Tasks:
    """Tasks registered on the test's App, and what they have seen."""

    add: pigeon.Task[[int, int], int]
    fail: pigeon.Task[[str], int]
    double: pigeon.Task[[int], int]
    blocked: pigeon.Task[[int], int]
    calls: Counter[str]


@pytest.fixture
def tasks(app: pigeon.App, gate: asyncio.Event) -> Tasks:
    calls: Counter[str] = Counter()

    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        calls["add"] += 1
        return a + b

    @app.task(name="fail")
    async def fail(message: str) -> int:
        calls["fail"] += 1
        raise ValueError(message)

    @app.task(name="double")
    def double(x: int) -> int:  # a sync task: runs in the worker's thread pool
        calls["double"] += 1
        return 2 * x

    @app.task(name="blocked")
    async def blocked(x: int) -> int:  # runs until the test opens the gate
        calls["blocked"] += 1
        await gate.wait()
        return x

    return Tasks(add, fail, double, blocked, calls)


async def settled_everything(app: pigeon.App) -> None:
    """Wait until no message of the App is waiting, pending or running."""

    async def idle() -> bool:
        stats = await app.backend.stats()
        return not any(
            q.waiting or q.scheduled or q.pending or q.leased for q in stats.queues.values()
        )

    async with asyncio.timeout(5):
        while not await idle():
            await asyncio.sleep(0.005)


async def outcome_of(promise: pigeon.Promise[int]) -> int:
    return await promise


async def test_a_cancelled_awaiter_leaves_the_other_awaiters_of_the_same_outcome_waiting(
    tasks: Tasks, worker: Worker, gate: asyncio.Event
) -> None:
    running = tasks.blocked.send(7)
    other = tasks.blocked.send(8)
    first, second, third = (asyncio.ensure_future(outcome_of(running)) for _ in range(3))
    fourth = asyncio.ensure_future(outcome_of(other))
    await asyncio.sleep(0.05)
    second.cancel()
    await asyncio.sleep(0.05)
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, third, fourth), 5) == [7, 7, 8]
    assert second.cancelled()
    assert await running == 7  # a new awaiter after the outcome gets it too


async def test_a_task_fulfils_with_its_return_value(tasks: Tasks, worker: Worker) -> None:
    assert await tasks.add.send(1, 2) == 3
    assert await tasks.add.send(a=3, b=4) == 7
    assert await tasks.double.send(21) == 42


async def test_a_failed_task_rejects_with_task_error_naming_type_message_traceback(
    tasks: Tasks, worker: Worker
) -> None:
    p = tasks.fail.send("bad input")
    with pytest.raises(pigeon.TaskError) as caught:
        await p
    error = caught.value
    assert isinstance(error, pigeon.PigeonError)
    assert error.type == "ValueError"
    assert error.message == "bad input"
    assert "Traceback (most recent call last)" in error.traceback
    assert "raise ValueError(message)" in error.traceback
    assert "ValueError: bad input" in error.traceback
    assert error.id == await p.sent()
    assert str(error) == "ValueError: bad input"


async def test_result_from_sync_code_in_a_thread_waits_for_the_outcome(
    tasks: Tasks, worker: Worker
) -> None:
    p = tasks.add.send(2, 3)
    assert await asyncio.to_thread(p.result, 5) == 5

    def in_thread() -> tuple[int, int]:
        q = tasks.add.send(4, 5)  # sending from sync code blocks until the message is stored
        return q.result(timeout=5), q.then(lambda v: v * 10).result(timeout=5)

    assert await asyncio.to_thread(in_thread) == (9, 90)


async def test_result_from_sync_code_raises_timeout_and_the_work_goes_on(
    tasks: Tasks, worker: Worker, gate: asyncio.Event
) -> None:
    p = tasks.blocked.send(7)
    started = time.monotonic()
    with pytest.raises(pigeon.Timeout) as caught:
        await asyncio.to_thread(p.result, 0.1)
    assert isinstance(caught.value, TimeoutError)
    assert 0.1 <= time.monotonic() - started < 2
    gate.set()
    assert await asyncio.to_thread(p.result, 5) == 7


async def test_result_on_the_event_loop_refuses_instead_of_deadlocking(
    tasks: Tasks, worker: Worker
) -> None:
    p = tasks.add.send(1, 1)
    with pytest.raises(pigeon.PigeonError, match="await"):
        p.result(timeout=1)
    assert await p == 2


async def test_status_goes_from_pending_to_succeeded(
    tasks: Tasks, worker: Worker, gate: asyncio.Event
) -> None:
    p = tasks.blocked.send(1)
    assert p.status == "pending"
    await eventually(lambda: tasks.calls["blocked"] == 1)
    assert p.status == "pending"
    gate.set()
    await p
    assert p.status == "succeeded"


async def test_status_of_a_failed_task_is_dead(tasks: Tasks, worker: Worker) -> None:
    # DESIGN.md section 3: the last failure goes to the dead-letter store.
    p = tasks.fail.send("x")
    assert p.status == "pending"
    await outcome(p)
    assert p.status == "dead"
    letters = await worker.app.backend.dead_letters()
    assert [letter.id for letter in letters] == [await p.sent()]


async def test_cancel_of_a_delayed_message_fulfils_true_and_rejects_the_original(
    tasks: Tasks, worker: Worker
) -> None:
    p = tasks.add.options(delay=60).send(1, 2)
    assert await p.cancel() is True
    with pytest.raises(pigeon.Cancelled):
        await p
    assert p.status == "cancelled"
    assert tasks.calls["add"] == 0


async def test_cancel_after_the_task_ran_fulfils_false_and_the_result_stands(
    tasks: Tasks, worker: Worker
) -> None:
    p = tasks.add.send(1, 2)
    assert await p == 3
    assert await p.cancel() is False
    assert await p == 3
    assert p.status == "succeeded"


async def test_fire_runs_the_task_and_keeps_no_result(app: pigeon.App, worker: Worker) -> None:
    seen: list[str] = []

    @app.task
    async def notify(url: str) -> str:
        seen.append(url)
        return url

    assert notify.fire("https://example.com/hook") is None
    await eventually(lambda: seen)
    await settled_everything(app)
    assert seen == ["https://example.com/hook"]
    assert (await app.backend.stats()).results == 0


async def test_a_send_that_keeps_no_result_says_so_at_once(tasks: Tasks, worker: Worker) -> None:
    p = tasks.add.options(result_ttl=0).send(1, 2)
    async with asyncio.timeout(1):
        with pytest.raises(pigeon.ResultNotKept):
            await p


async def test_a_second_send_with_the_same_key_returns_the_first_promise_and_runs_once(
    tasks: Tasks, worker: Worker
) -> None:
    first = tasks.add.options(key="order-17").send(1, 2)
    second = tasks.add.options(key="order-17").send(100, 200)
    assert await second.sent() == await first.sent()
    assert second.id == first.id
    assert await second == 3
    assert await first == 3
    third = tasks.add.options(key="order-17").send(5, 5)  # after it ran: still the first
    assert await third == 3
    assert third.id == first.id
    await settled_everything(worker.app)
    assert tasks.calls["add"] == 1


async def test_a_local_then_callback_runs_when_the_outcome_arrives(
    tasks: Tasks, worker: Worker
) -> None:
    seen: list[int] = []
    tasks.add.send(20, 22).then(seen.append)  # nobody awaits the derived promise
    await eventually(lambda: seen)
    assert seen == [42]


async def test_awaiting_from_another_event_loop_is_bridged(tasks: Tasks, worker: Worker) -> None:
    p = tasks.add.send(3, 4)

    async def elsewhere() -> int:
        return await p  # this thread's own loop; the App's loop is the test's

    assert await asyncio.to_thread(asyncio.run, elsewhere()) == 7


async def test_callbacks_attached_to_a_seen_outcome_run_once(tasks: Tasks, worker: Worker) -> None:
    p = tasks.add.send(1, 1)
    assert await p == 2
    seen: list[int] = []
    derived = p.then(seen.append)
    await eventually(lambda: seen)
    await derived
    await derived
    assert seen == [2]


async def test_local_callbacks_see_a_task_failure(tasks: Tasks, worker: Worker) -> None:
    p = tasks.fail.send("nope")
    fulfilled, error = await outcome(p.then(lambda v: v + 1))
    assert not fulfilled
    assert isinstance(error, pigeon.TaskError)
    assert error.message == "nope"
    assert await p.catch(lambda e: f"{e.type}: {e.message}") == "ValueError: nope"


async def test_combinators_over_tasks_keep_input_order(tasks: Tasks, worker: Worker) -> None:
    promises = [tasks.add.send(i, i) for i in range(20)]
    assert await Promise.all(promises) == [2 * i for i in range(20)]
    records = await Promise.all_settled([tasks.add.send(1, 1), tasks.fail.send("no")])
    assert records[0] == Settled("fulfilled", value=2)
    assert records[1].status == "rejected"
    assert isinstance(records[1].reason, pigeon.TaskError)


async def test_all_rejects_at_the_first_failed_task_without_waiting_for_a_slow_one(
    tasks: Tasks, worker: Worker, gate: asyncio.Event
) -> None:
    slow = tasks.blocked.send(1)
    async with asyncio.timeout(5):
        with pytest.raises(pigeon.TaskError) as caught:
            await Promise.all([slow, tasks.fail.send("fast failure"), tasks.add.send(1, 1)])
    assert caught.value.message == "fast failure"
    assert slow.status == "pending"
    gate.set()
    assert await slow == 1


async def test_any_and_race_over_tasks(tasks: Tasks, worker: Worker) -> None:
    assert await Promise.any([tasks.fail.send("a"), tasks.add.send(1, 2)]) == 3
    with pytest.raises(pigeon.AggregateError) as caught:
        await Promise.any([tasks.fail.send("a"), tasks.fail.send("b")])
    assert [e.message for e in caught.value.errors] == ["a", "b"]
    assert await Promise.race([tasks.blocked.send(1), tasks.add.send(2, 2)]) == 4


async def test_an_outcome_seen_once_does_not_change(tasks: Tasks, worker: Worker) -> None:
    # The message fails, is re-queued from the dead letters and succeeds: the promise that
    # saw the failure keeps it (a promise settles once).
    attempts: list[int] = []

    @worker.app.task(name="flaky")
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first time")
        return "second time"

    p = flaky.send()
    first = await outcome(p)
    assert first[0] is False
    assert await worker.app.backend.requeue([await p.sent()]) == 1
    await eventually(lambda: len(attempts) == 2)
    await settled_everything(worker.app)
    assert await outcome(p) == first
    assert p.status == "dead"
    assert await worker.app.promise(p.id, flaky) == "second time"


# -------------------------------------------------------------------------------------------
# Durable follow-ups: a Task passed to then / catch / finally_ runs on a worker
# -------------------------------------------------------------------------------------------


async def test_then_task_runs_on_a_worker_with_the_value(tasks: Tasks, worker: Worker) -> None:
    assert await tasks.add.send(1, 2).then(tasks.double) == 6
    assert await tasks.add.send(1, 2).then(tasks.double).then(tasks.double) == 12


async def test_then_task_passes_a_rejection_through_without_running(
    tasks: Tasks, worker: Worker
) -> None:
    p = tasks.fail.send("upstream").then(tasks.double)
    with pytest.raises(pigeon.TaskError) as caught:
        await p
    assert (caught.value.type, caught.value.message) == ("ValueError", "upstream")
    assert tasks.calls["double"] == 0


async def test_catch_task_receives_a_failure_record(app: pigeon.App, worker: Worker) -> None:
    received: list[pigeon.Failure] = []

    @app.task
    async def fail() -> int:
        raise KeyError("missing")

    @app.task
    async def recover(failure: pigeon.Failure) -> int:
        received.append(failure)
        return -1

    p = fail.send()
    assert await p.catch(recover) == -1
    [failure] = received
    assert isinstance(failure, pigeon.Failure)
    assert failure.type == "KeyError"
    assert failure.message == "'missing'"
    assert "Traceback" in failure.traceback
    assert failure.id == p.id


async def test_catch_task_passes_a_value_through_without_running(
    app: pigeon.App, tasks: Tasks, worker: Worker
) -> None:
    ran: list[pigeon.Failure] = []

    @app.task
    async def recover(failure: pigeon.Failure) -> int:
        ran.append(failure)
        return -1

    assert await tasks.add.send(2, 2).catch(recover) == 4
    assert ran == []


@dataclass
class Fallback:
    reason: str
    at: datetime


async def test_catch_task_values_decode_as_their_own_types(
    app: pigeon.App, tasks: Tasks, worker: Worker
) -> None:
    # Promise[R | S]: a value passed through is the parent's R, a recovery the handler's S.
    @app.task
    async def fallback(failure: pigeon.Failure) -> Fallback:
        return Fallback(failure.message, datetime(2024, 1, 2, tzinfo=UTC))

    assert await tasks.add.send(2, 2).catch(fallback) == 4
    recovered = await tasks.fail.send("gone").catch(fallback)
    assert recovered == Fallback("gone", datetime(2024, 1, 2, tzinfo=UTC))


async def test_then_task_value_decodes_as_its_return_type(app: pigeon.App, worker: Worker) -> None:
    @app.task
    async def when() -> datetime:
        return datetime(2024, 5, 6, 7, 8, tzinfo=UTC)

    @app.task
    async def next_day(at: datetime) -> date:
        return (at + timedelta(days=1)).date()

    assert await when.send().then(next_day) == date(2024, 5, 7)


async def test_finally_task_runs_and_passes_the_outcome_through(
    app: pigeon.App, tasks: Tasks, worker: Worker
) -> None:
    cleanups: list[str] = []

    @app.task
    async def cleanup() -> str:
        cleanups.append("cleanup")
        return "not the outcome"

    assert await tasks.add.send(2, 3).finally_(cleanup) == 5
    with pytest.raises(pigeon.TaskError) as caught:
        await tasks.fail.send("still failing").finally_(cleanup)
    assert caught.value.message == "still failing"
    assert cleanups == ["cleanup", "cleanup"]


async def test_finally_and_catch_tasks_after_a_join_pass_its_value_through(
    app: pigeon.App, tasks: Tasks, worker: Worker
) -> None:
    @app.task
    async def cleanup() -> str:
        return "not the outcome"

    @app.task
    async def recover(failure: pigeon.Failure) -> str:
        return f"recovered from {failure.type}"

    members = [tasks.add.send(1, 1), tasks.add.send(2, 2)]
    assert await Promise.all(members).finally_(cleanup) == [2, 4]
    assert await Promise.all(members).catch(recover) == [2, 4]
    failing = Promise.all([tasks.fail.send("x"), tasks.add.send(1, 1)])
    assert await failing.catch(recover) == "recovered from ValueError"


# -------------------------------------------------------------------------------------------
# Durable joins: Promise.all/any/race/all_settled(...).then(task)
# -------------------------------------------------------------------------------------------


@pytest.fixture
def total(app: pigeon.App) -> pigeon.Task[[list[int]], int]:
    @app.task(name="total")
    async def total(values: list[int]) -> int:
        return sum(values)

    return total


async def test_durable_all_then_task_receives_the_values_in_input_order(
    tasks: Tasks, total: pigeon.Task[[list[int]], int], worker: Worker
) -> None:
    @worker.app.task
    async def listed(values: list[int]) -> list[int]:
        return values

    members = [tasks.add.send(i, 0) for i in range(5)]
    assert await Promise.all(members).then(listed) == [0, 1, 2, 3, 4]
    assert await Promise.all([tasks.add.send(1, 1), tasks.double.send(4)]).then(total) == 10


async def test_durable_all_of_nothing_runs_the_task_with_an_empty_list(
    app: pigeon.App, total: pigeon.Task[[list[int]], int], worker: Worker
) -> None:
    assert await Promise.all([]).then(total) == 0


async def test_durable_all_with_a_failing_member_rejects_without_running_the_task(
    app: pigeon.App, tasks: Tasks, worker: Worker
) -> None:
    ran: list[list[int]] = []

    @app.task
    async def collect(values: list[int]) -> int:
        ran.append(values)
        return 0

    p = Promise.all([tasks.add.send(1, 1), tasks.fail.send("member failed")]).then(collect)
    with pytest.raises(pigeon.TaskError) as caught:
        await p
    assert (caught.value.type, caught.value.message) == ("ValueError", "member failed")
    assert ran == []


async def test_durable_any_with_a_failing_member_takes_the_fulfilled_one(
    tasks: Tasks, worker: Worker
) -> None:
    p = Promise.any([tasks.fail.send("no"), tasks.add.send(2, 3)]).then(tasks.double)
    assert await p == 10


async def test_durable_any_of_only_failures_rejects_with_aggregate_error(
    tasks: Tasks, worker: Worker
) -> None:
    p = Promise.any([tasks.fail.send("a"), tasks.fail.send("b")]).then(tasks.double)
    with pytest.raises(pigeon.TaskError) as caught:
        await p
    assert caught.value.type == "AggregateError"
    assert "a" in caught.value.message
    assert "b" in caught.value.message
    assert tasks.calls["double"] == 0


def assert_member_failure(error: BaseException, type: str, message: str) -> None:
    """``error`` is the member failure a durable join passed on (not a dead join)."""
    assert isinstance(error, pigeon.TaskError)
    assert error.type != "JoinMemberMissing", (
        "the join fired before all of its members had settled (as all/any/race must, without"
        " waiting for the rest), and the worker dead-lettered it because the unsettled"
        f" members have no outcome yet: {error.message}"
    )
    assert (error.type, error.message) == (type, message)


async def test_durable_all_rejects_at_the_first_failure_without_waiting_for_a_slow_member(
    tasks: Tasks, worker: Worker
) -> None:
    slow = tasks.blocked.send(1)
    p = Promise.all([slow, tasks.fail.send("member failed")]).then(tasks.double)
    async with asyncio.timeout(5):
        fulfilled, error = await outcome(p)
    assert not fulfilled
    assert_member_failure(error, "ValueError", "member failed")
    assert slow.status == "pending"
    assert tasks.calls["double"] == 0


async def test_durable_any_takes_the_first_fulfilment_without_waiting_for_a_slow_member(
    tasks: Tasks, worker: Worker
) -> None:
    p = Promise.any([tasks.blocked.send(1), tasks.add.send(2, 3)]).then(tasks.double)
    async with asyncio.timeout(5):
        fulfilled, value = await outcome(p)
    if not fulfilled:
        assert_member_failure(value, "-", "-")
    assert value == 10


async def test_durable_race_rejects_when_the_first_member_to_settle_fails(
    tasks: Tasks, worker: Worker
) -> None:
    p = Promise.race([tasks.blocked.send(100), tasks.fail.send("first to settle")])
    async with asyncio.timeout(5):
        fulfilled, error = await outcome(p.then(tasks.double))
    assert not fulfilled
    assert_member_failure(error, "ValueError", "first to settle")
    assert tasks.calls["double"] == 0


async def test_durable_race_fulfils_when_the_first_member_to_settle_succeeds(
    tasks: Tasks, worker: Worker
) -> None:
    p = Promise.race([tasks.blocked.send(100), tasks.add.send(1, 1)])
    async with asyncio.timeout(5):
        fulfilled, value = await outcome(p.then(tasks.double))
    if not fulfilled:
        assert_member_failure(value, "-", "-")
    assert value == 4


async def test_durable_race_of_nothing_stays_pending(
    app: pigeon.App, tasks: Tasks, worker: Worker
) -> None:
    p = Promise.race([]).then(tasks.double)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await p
    assert tasks.calls["double"] == 0
    queue = (await app.backend.stats()).queues["default"]
    assert (queue.leased, worker.running) == (0, 0), (
        "race([]) never settles, so its join must never fire; instead it fired at once (a"
        " join of 0 members counts as settled) and the worker's run of it crashed with an"
        " IndexError, holding the lease and a concurrency slot forever"
    )


async def test_durable_all_settled_gives_settled_records_with_a_failing_member(
    app: pigeon.App, tasks: Tasks, worker: Worker
) -> None:
    received: list[list[Settled]] = []

    @app.task
    async def summarise(records: list[Settled]) -> list[str]:
        received.append(records)
        return [r.status for r in records]

    p = Promise.all_settled([tasks.add.send(1, 2), tasks.fail.send("member failed")])
    assert await p.then(summarise) == ["fulfilled", "rejected"]
    [(ok, bad)] = received
    assert ok == Settled("fulfilled", value=3)
    assert isinstance(bad, Settled)
    assert bad.status == "rejected"
    reason = bad.reason
    fields = reason if isinstance(reason, dict) else msgspec.structs.asdict(reason)
    assert fields["type"] == "ValueError"
    assert fields["message"] == "member failed"


async def test_a_durable_join_of_a_local_promise_is_refused_with_a_clear_error(
    tasks: Tasks, worker: Worker
) -> None:
    sent = tasks.add.send(1, 2)
    with pytest.raises(pigeon.PigeonError, match=r"durable join.*input 1"):
        Promise.all([sent, Promise.resolve(3)]).then(tasks.double)
    with pytest.raises(pigeon.PigeonError, match=r"input 1 is a plain value"):
        Promise.any([sent, 3]).then(tasks.double)
    with pytest.raises(pigeon.PigeonError, match=r"input 0"):
        Promise.race([sent.then(lambda v: v), sent]).then(tasks.double)
    with pytest.raises(pigeon.PigeonError, match=r"local callback"):
        sent.then(lambda v: v).then(tasks.double)
    await sent


# -------------------------------------------------------------------------------------------
# Retries, timeouts, validation, dead letters
# -------------------------------------------------------------------------------------------


async def test_a_task_that_fails_twice_is_retried_with_backoff_and_then_succeeds(
    app: pigeon.App, worker: Worker
) -> None:
    seen: list[tuple[int, float]] = []

    @app.task(retries=2, retry_backoff=0.05)
    async def flaky() -> str:
        seen.append((pigeon.current().failures, time.monotonic()))
        if len(seen) < 3:
            raise ConnectionError(f"attempt {len(seen)}")
        return "done"

    assert await flaky.send() == "done"
    assert [failures for failures, _ in seen] == [0, 1, 2]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(seen)]
    # about 0.05 s then 0.1 s (doubling), each with +-50% jitter
    assert gaps[0] >= 0.025
    assert gaps[1] >= 0.05


async def test_a_task_that_always_fails_is_tried_retries_plus_one_times(
    app: pigeon.App, worker: Worker
) -> None:
    failures: list[int] = []

    @app.task(retries=2, retry_backoff=0.01)
    async def hopeless() -> None:
        failures.append(pigeon.current().failures)
        raise ConnectionError(f"attempt {len(failures)}")

    with pytest.raises(pigeon.TaskError) as caught:
        await hopeless.send()
    assert caught.value.message == "attempt 3"
    assert failures == [0, 1, 2]


async def test_a_task_over_its_timeout_fails_naming_the_timeout(
    app: pigeon.App, worker: Worker
) -> None:
    @app.task(timeout=0.05)
    async def too_slow() -> None:
        await asyncio.sleep(10)

    started = time.monotonic()
    with pytest.raises(pigeon.TaskError) as caught:
        await too_slow.send()
    assert time.monotonic() - started < 5
    assert "timeout" in caught.value.message.lower()
    assert "0.05" in caught.value.message


@pytest.mark.parametrize(
    ("args", "kwargs", "complaint"),
    [
        (("x", 2), {}, "Expected `int`, got `str`"),
        ((1,), {}, "missing a required argument: 'b'"),
        ((1, 2), {"c": 3}, "unexpected keyword argument 'c'"),
        ((1, 2, 3), {}, "too many positional arguments"),
    ],
    ids=["wrong type", "missing argument", "unknown keyword", "too many"],
)
async def test_invalid_arguments_are_refused_at_send(
    app: pigeon.App, tasks: Tasks, args: tuple[Any, ...], kwargs: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(pigeon.EncodeError, match=complaint) as caught:
        tasks.add.send(*args, **kwargs)
    assert "add" in str(caught.value)
    await app.flush()
    assert (await app.backend.stats()).queues == {}


async def test_arguments_over_the_payload_limit_are_refused_naming_the_limit() -> None:
    app = pigeon.App("memory://", max_payload=1000)

    @app.task
    async def store(blob: str) -> None: ...

    with pytest.raises(pigeon.EncodeError, match="1,000 bytes"):
        store.send("x" * 2000)
    store.send("x" * 100)  # under the limit
    await app.close()


async def test_a_message_for_an_unknown_task_is_dead_lettered_with_the_reason(
    app: pigeon.App, tasks: Tasks, worker: Worker
) -> None:
    message = Message(id=new_id(), task="elsewhere.resize", kwargs=msgspec.Raw(b'{"x":1}'))
    await app.enqueue([message])
    with pytest.raises(pigeon.TaskError) as caught:
        await app.promise(message.id)
    assert caught.value.type == "TaskNotFound"
    assert "elsewhere.resize" in caught.value.message
    [letter] = await app.backend.dead_letters()
    assert letter.id == message.id
    assert "TaskNotFound" in letter.reason
    assert "elsewhere.resize" in letter.reason


async def test_a_message_with_invalid_arguments_is_dead_lettered_not_retried(
    app: pigeon.App, tasks: Tasks, worker: Worker
) -> None:
    message = Message(
        id=new_id(),
        task=tasks.add.name,
        kwargs=msgspec.Raw(b'{"a":"one","b":2}'),
        max_attempts=3,
    )
    await app.enqueue([message])
    with pytest.raises(pigeon.TaskError) as caught:
        await app.promise(message.id, tasks.add)
    assert caught.value.type == "InvalidArguments"
    [letter] = await app.backend.dead_letters()
    assert "InvalidArguments" in letter.reason
    assert tasks.calls["add"] == 0


async def test_a_sync_task_runs_in_a_worker_thread(app: pigeon.App, worker: Worker) -> None:
    threads: list[threading.Thread] = []

    @app.task
    def where() -> None:
        threads.append(threading.current_thread())

    await where.send()
    assert threads
    assert threads[0] is not threading.main_thread()


async def test_two_workers_share_the_work(app: pigeon.App, start_worker: StartWorker) -> None:
    first, second = await start_worker(concurrency=2), await start_worker(concurrency=2)
    release = asyncio.Event()
    running = 0

    @app.task
    async def hold(i: int) -> int:
        nonlocal running
        running += 1
        await release.wait()
        return i

    promises = [hold.send(i) for i in range(4)]
    await eventually(lambda: running == 4)  # 2 + 2 slots: both workers are busy
    assert first.running == 2
    assert second.running == 2
    release.set()
    assert await Promise.all(promises) == [0, 1, 2, 3]
