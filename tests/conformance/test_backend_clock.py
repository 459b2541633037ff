"""The backend's clock decides every time of a message, never the sender's: a relative
expiry is resolved at enqueue as a delay is, and ``inspect`` shows when the backend stored
the message (``sent_at``). And ``inspect``'s one rule: a worker and a lease deadline are
shown only while the message is leased."""

from __future__ import annotations

import time
import types
from collections.abc import Callable

import pytest

import pigeon
import pigeon.task
from pigeon.backends import Backend
from pigeon.message import Message

from .messages import QUEUE, lease_of, make_message, retry, succeeded
from .polling import clock_passes, eventually, fetch_eventually

HOUR = 3600.0


def _noop() -> None:
    return None


@pytest.fixture
def sender() -> Callable[[float, float], Message]:
    """Makes the message a task of queue QUEUE sends with ``expires=`` seconds, as a sender
    whose clock is ``skew`` seconds off the backend's makes it (only the clock that
    ``pigeon.task`` reads is skewed)."""
    app = pigeon.App("memory://")
    task = app.task(queue=QUEUE)(_noop)

    def make(expires: float, skew: float) -> Message:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                pigeon.task, "time", types.SimpleNamespace(time=lambda: time.time() + skew)
            )
            return task.message((), {}, task.options(expires=expires).opts)

    return make


async def test_relative_expiry_is_not_cut_short_by_a_sender_clock_behind_the_backend(
    backend: Backend, sender: Callable[[float, float], Message]
) -> None:
    message = sender(60.0, -HOUR)
    await backend.enqueue([message])

    [delivery] = await fetch_eventually(backend)

    assert delivery.id == message.id, "expired by the sender's clock, not the backend's"
    assert await backend.results([message.id]) == {}


async def test_relative_expiry_runs_out_on_the_backend_clock_for_a_sender_clock_ahead(
    backend: Backend, sender: Callable[[float, float], Message]
) -> None:
    message = sender(0.3, HOUR)
    await backend.enqueue([message])
    stored = await backend.time()

    await clock_passes(backend, stored + 0.3)

    assert await backend.fetch([QUEUE], 1, "w") == [], "delivered after its expiry"
    result = (await backend.results([message.id]))[message.id]
    assert result.state == "dead"
    assert result.error is not None
    assert result.error.type == "Expired"


async def test_relative_expiry_is_dead_after_its_time_on_the_backend_clock_and_not_before(
    backend: Backend,
) -> None:
    # Scheduled past its expiry: due at +0.4 s, expired at +0.2 s; a fetch finds it (dead)
    # only once it is due, and never delivers it.
    before = await backend.time()
    message = make_message(delay=0.4, expires=0.2, created_at=before - HOUR)
    fresh = make_message(expires=60.0, created_at=before - HOUR)
    await backend.enqueue([message, fresh])
    [delivery] = await backend.fetch([QUEUE], 2, "w")
    assert delivery.id == fresh.id
    assert await backend.results([message.id]) == {}

    async def dead_not_delivered() -> bool:
        assert await backend.fetch([QUEUE], 1, "w") == [], "an expired message was delivered"
        return message.id in await backend.results([message.id])

    await eventually(dead_not_delivered, "the expired message to be settled dead")
    assert await backend.time() >= before + 0.2
    assert (await backend.results([message.id]))[message.id].state == "dead"


async def test_the_earlier_of_a_relative_and_an_absolute_expiry_wins(backend: Backend) -> None:
    now = await backend.time()
    absolute_first = make_message(expires_at=now - 1, expires=60.0)
    relative_first = make_message(expires_at=now + HOUR, expires=0.2)
    await backend.enqueue([absolute_first, relative_first])
    stored = await backend.time()

    await clock_passes(backend, stored + 0.2)

    assert await backend.fetch([QUEUE], 10, "w") == []
    results = await backend.results([absolute_first.id, relative_first.id])
    assert {r.state for r in results.values()} == {"dead"}
    assert len(results) == 2


async def test_requeue_resolves_a_relative_expiry_afresh(backend: Backend) -> None:
    message = make_message(expires=0.2)
    await backend.enqueue([message])
    stored = await backend.time()
    await clock_passes(backend, stored + 0.2)
    assert await backend.fetch([QUEUE], 1, "w") == []
    assert await backend.requeue([message.id]) == 1

    [delivery] = await backend.fetch([QUEUE], 1, "w")

    assert delivery.id == message.id


async def test_inspect_shows_sent_at_on_the_backend_clock(backend: Backend) -> None:
    message = make_message(created_at=time.time())
    before = await backend.time()
    await backend.enqueue([message])
    after = await backend.time()

    info = await backend.inspect(message.id)

    assert info is not None
    assert info.sent_at is not None
    # The backends read their clocks at millisecond (SQLite) or microsecond resolution.
    assert before - 0.002 <= info.sent_at <= after + 0.002


async def test_inspect_shows_sent_at_on_the_backend_clock_whatever_the_sender_clock(
    backend: Backend, sender: Callable[[float, float], Message]
) -> None:
    if backend.url.startswith("sqlite:"):
        pytest.skip(
            "sqlite:// shares its clock with every sender (one host): sent_at is the body's"
            " created_at"
        )
    message = sender(60.0, -HOUR)
    before = await backend.time()
    await backend.enqueue([message])
    after = await backend.time()

    info = await backend.inspect(message.id)

    assert info is not None
    assert info.sent_at is not None
    assert before - 0.002 <= info.sent_at <= after + 0.002


async def test_inspect_shows_the_worker_and_lease_only_while_the_message_is_leased(
    backend: Backend,
) -> None:
    released, retried, settled = (make_message() for _ in range(3))
    await backend.enqueue([released, retried, settled])
    deliveries = {d.id: d for d in await backend.fetch([QUEUE], 3, "worker-1")}
    assert set(deliveries) == {released.id, retried.id, settled.id}
    for mid in deliveries:
        info = await backend.inspect(mid)
        assert info is not None
        assert (info.state, info.worker) == ("leased", "worker-1")
        assert info.lease_until is not None

    assert await backend.release([lease_of(deliveries[released.id])]) == 1
    assert await backend.settle([retry(deliveries[retried.id], retry_in=HOUR)]) == [True]
    assert await backend.settle([succeeded(deliveries[settled.id])]) == [True]

    shown = {mid: await backend.inspect(mid) for mid in deliveries}
    states = {mid: (i.state if i else None) for mid, i in shown.items()}
    assert states == {released.id: "pending", retried.id: "scheduled", settled.id: "succeeded"}
    for mid, info in shown.items():
        assert info is not None
        assert (info.worker, info.lease_until) == (None, None), f"{states[mid]} shows a lease"
