"""The message life as a hypothesis state machine, checked against a plain Python model.

The machine drives one backend through enqueue, fetch, extend, settle, retry, release,
cancel and lease expiry, and after every step checks the invariants: no message is leased
twice, every message is in exactly one place (waiting/scheduled/pending/leased, or settled
with a result, dead ones also in the dead letters), and a stored result never changes.

Time is the costly part. Normal leases are 30 s and delays 100 s, so they never run out
during an example; only a "short" fetch leases for ``SHORT_LEASE``, and until the ``expire``
rule has waited past it, rules whose answer would depend on the race (fetching, cancelling
or releasing that message) are not drawn. The backend runs on an event loop the machine owns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pigeon.backends import Backend, from_url
from pigeon.message import Failure, Lease, Outcome, QueueStats, Result

from .messages import make_message, value

T = TypeVar("T")

QUEUES = ("a", "b")
SHORT_LEASE = 0.03
FAR = 100.0  # a delay or retry that never comes due within an example

SETTINGS = settings(
    max_examples=75,
    stateful_step_count=40,
    deadline=None,
    report_multiple_bugs=False,  # shrinking costs real time (leases): one bug at a time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class Model:
    """What the backend should know of one message."""

    id: str
    queue: str
    priority: int
    max_deliveries: int
    state: str  # scheduled | pending | leased | short | lapsed | poisoned | settled
    attempt: int = 0
    failures: int = 0
    lost: int = 0  # leases that ran out
    outcome: str | None = None  # the final state expected in the result
    error: str | None = None
    data: int | None = None
    result: Result | None = None  # the first stored result seen, which must never change
    dead: bool = False


#: Picks are drawn in this fixed range and taken modulo the number of candidates: how many
#: messages are in a state depends on time too (a lease that ran out), and hypothesis needs
#: a replayed choice drawn under the same constraints as the first time, or it stops the
#: run with FlakyStrategyDefinition (sampled_from's bound is the candidates' number).
PICKS = 64


def one(items: list[T]) -> st.SearchStrategy[T]:
    """One of ``items``."""
    return st.integers(0, PICKS - 1).map(lambda i: items[i % len(items)])


def some(models: list[Model], max_size: int | None = None) -> st.SearchStrategy[list[Model]]:
    """A non-empty selection of distinct messages."""
    picks = st.lists(st.integers(0, PICKS - 1), min_size=1, max_size=max_size)
    return picks.map(
        lambda ps: list({by_id(m): m for m in (models[i % len(models)] for i in ps)}.values())
    )


def by_id(model: Model) -> str:
    return model.id


def build_machine(url_factory: Callable[[], str]) -> type[RuleBasedStateMachine]:
    class MessageLife(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.backend: Backend = from_url(url_factory())
            self.run(self.backend.open())
            self.models: dict[str, Model] = {}
            self.superseded: list[Lease] = []  # leases a later attempt or a settle replaced
            self.short_until = 0.0  # the backend time every short lease has run out by
            self.counter = 0

        def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
            return self.loop.run_until_complete(coroutine)

        def teardown(self) -> None:
            self.run(self.backend.close())
            self.loop.close()

        # what the model says -----------------------------------------------------------

        def in_state(self, *states: str) -> list[Model]:
            return [m for m in self.models.values() if m.state in states]

        def uncertain(self) -> bool:
            """Whether some short lease may or may not have run out yet."""
            return bool(self.in_state("short"))

        def fetchable(self) -> bool:
            """Something is due, and no short lease may or may not have run out."""
            return not self.uncertain() and bool(self.in_state("pending", "lapsed", "poisoned"))

        # rules -----------------------------------------------------------------------------

        @rule(
            batch=st.lists(
                st.tuples(
                    st.sampled_from(QUEUES),
                    st.sampled_from([0, 5]),
                    st.booleans(),
                    st.sampled_from([1, 2]),
                ),
                min_size=1,
                max_size=3,
            )
        )
        def enqueue(self, batch: list[tuple[str, int, bool, int]]) -> None:
            messages = [
                make_message(
                    queue, priority=priority, delay=FAR if later else 0.0, max_deliveries=deliveries
                )
                for queue, priority, later, deliveries in batch
            ]
            assert self.run(self.backend.enqueue(messages)) == [m.id for m in messages]
            for m, (_, _, later, _) in zip(messages, batch, strict=True):
                self.models[m.id] = Model(
                    m.id,
                    m.queue,
                    m.priority,
                    m.max_deliveries,
                    "scheduled" if later else "pending",
                )

        @precondition(lambda self: self.fetchable())
        @rule(
            queues=st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True),
            limit=st.integers(1, 4),
        )
        def fetch(self, queues: list[str], limit: int) -> None:
            self.fetch_and_check(queues, limit, short=False)

        @precondition(lambda self: self.fetchable())
        @rule(queues=st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True))
        def fetch_short(self, queues: list[str]) -> None:
            """Lease for a moment, as a worker that crashes would hold a message."""
            self.fetch_and_check(queues, 1, short=True)

        def fetch_and_check(self, queues: list[str], limit: int, short: bool) -> None:
            due = [m for m in self.in_state("pending", "lapsed") if m.queue in queues]
            lease = SHORT_LEASE if short else None
            got = self.run(self.backend.fetch(queues, limit, "w", lease=lease))
            fetched_by = self.run(self.backend.time())

            ids = [d.id for d in got]
            assert len(ids) == len(set(ids)), f"one fetch leased a message twice: {ids}"
            for d in got:
                model = self.models.get(d.id)
                assert model is not None, f"fetch returned an unknown id {d.id}"
                assert model in due, f"fetch leased {d.id} while it was {model.state}"
                assert (d.attempt, d.failures) == (model.attempt + 1, model.failures)
            assert len(got) == min(limit, len(due)), "fetch left due messages behind"
            rank = {m.id: (queues.index(m.queue), -m.priority) for m in due}
            order = [rank[i] for i in ids]
            assert order == sorted(order), f"fetch broke queue/priority order: {order}"
            if got:
                assert all(rank[m.id] >= order[-1] for m in due if m.id not in ids)

            for d in got:
                model = self.models[d.id]
                if model.state == "lapsed":  # taken over: the old lease is now stale
                    self.superseded.append(Lease(model.id, model.attempt))
                model.attempt, model.state = d.attempt, "short" if short else "leased"
            if short and got:
                self.short_until = fetched_by + SHORT_LEASE
            self.find_poisoned(queues if len(got) < limit else [])

        def find_poisoned(self, must_be_dead_in: list[str]) -> None:
            """A poisoned message dies on a fetch; one the fetch had room for must be dead."""
            poisoned = self.in_state("poisoned")
            found = self.run(self.backend.results([m.id for m in poisoned]))
            for model in poisoned:
                if model.id in found:
                    self.superseded.append(Lease(model.id, model.attempt))
                    model.state, model.outcome, model.dead = "settled", "dead", True
                else:
                    assert model.queue not in must_be_dead_in, (
                        f"{model.id} ran out of leases {model.lost} times but was not "
                        "dead-lettered by a fetch that had room for it"
                    )

        @precondition(lambda self: bool(self.in_state("short")))
        @rule()
        def expire(self) -> None:
            """Let every short lease run out: the only rule that waits on the clock."""
            while self.run(self.backend.time()) <= self.short_until + 0.005:
                time.sleep(0.005)
            for model in self.in_state("short"):
                model.lost += 1
                model.state = "poisoned" if model.lost >= model.max_deliveries else "lapsed"

        @precondition(lambda self: bool(self.in_state("leased")))
        @rule(
            data=st.data(),
            kind=st.sampled_from(
                ["succeeded", "failed", "dead", "cancelled", "retry now", "retry later"]
            ),
        )
        def settle(self, data: st.DataObject, kind: str) -> None:
            model = data.draw(one(self.in_state("leased")), label="message")
            self.counter += 1
            if kind.startswith("retry"):
                retry_in = FAR if kind == "retry later" else 0.0
                outcome = Outcome(model.id, model.attempt, "retry", retry_in=retry_in)
            else:
                error = Failure("E", f"error {self.counter}") if kind != "succeeded" else None
                raw = value(self.counter) if kind == "succeeded" else None
                outcome = Outcome(model.id, model.attempt, kind, value=raw, error=error)  # type: ignore[arg-type]

            assert self.run(self.backend.settle([outcome])) == [True]

            self.superseded.append(Lease(model.id, model.attempt))
            if kind.startswith("retry"):
                model.failures += 1
                model.state = "scheduled" if kind == "retry later" else "pending"
            else:
                model.state, model.outcome = "settled", kind
                model.dead = kind == "dead"
                model.data = self.counter if kind == "succeeded" else None
                model.error = f"error {self.counter}" if kind != "succeeded" else None

        @precondition(lambda self: bool(self.superseded))
        @rule(data=st.data(), kind=st.sampled_from(["succeeded", "failed", "cancelled"]))
        def settle_stale(self, data: st.DataObject, kind: str) -> None:
            stale = data.draw(one(self.superseded), label="stale lease")
            outcome = Outcome(stale.id, stale.attempt, kind, value=value("stale"))  # type: ignore[arg-type]
            assert self.run(self.backend.settle([outcome])) == [False]
            assert self.run(self.backend.extend([stale])) == {stale.id}
            assert self.run(self.backend.release([stale])) == 0

        @precondition(lambda self: bool(self.in_state("leased")))
        @rule(data=st.data())
        def extend(self, data: st.DataObject) -> None:
            held = self.in_state("leased")
            chosen = data.draw(some(held))
            leases = [Lease(m.id, m.attempt) for m in chosen]
            assert self.run(self.backend.extend(leases)) == set()

        @precondition(lambda self: bool(self.in_state("leased")))
        @rule(data=st.data())
        def release(self, data: st.DataObject) -> None:
            held = self.in_state("leased")
            chosen = data.draw(some(held))
            leases = [Lease(m.id, m.attempt) for m in chosen]
            assert self.run(self.backend.release(leases)) == len(chosen)
            self.superseded.extend(leases)
            for model in chosen:
                model.state = "pending"

        @precondition(lambda self: bool(self.models))
        @rule(data=st.data(), act=st.integers(0, 2))
        def cancel(self, data: st.DataObject, act: int) -> None:
            if act:  # cancel one time in three, or it ends most messages before they run
                return
            # A lease that ran out but was not fetched again is neither clearly leased nor
            # clearly pending (see the report on the contract), so it is never chosen.
            certain = self.in_state("scheduled", "pending", "leased", "settled")
            if not certain:
                return
            chosen = data.draw(some(certain, max_size=3))
            expected = {m.id for m in chosen if m.state in ("scheduled", "pending")}

            assert set(self.run(self.backend.cancel([m.id for m in chosen]))) == expected

            for model in chosen:
                if model.id in expected:
                    model.state, model.outcome = "settled", "cancelled"

        # invariants -----------------------------------------------------------------------

        @invariant()
        def results_match_and_never_change(self) -> None:
            stored = self.run(self.backend.results(list(self.models)))
            for model in self.models.values():
                result = stored.get(model.id)
                if model.state == "settled":
                    assert result is not None, f"{model.id} settled but has no result"
                    if model.result is None:
                        self.check_first_result(model, result)
                        model.result = result
                    assert result == model.result, f"the result of {model.id} changed"
                elif model.state != "poisoned":
                    assert result is None, f"{model.id} is {model.state} but has a result"

        def check_first_result(self, model: Model, result: Result) -> None:
            assert result.state == model.outcome
            if model.data is not None:
                assert result.value == value(model.data)
            if model.error is not None:
                assert result.error is not None
                assert result.error.message == model.error

        @invariant()
        def dead_letters_match(self) -> None:
            letters = self.run(self.backend.dead_letters(limit=10_000))
            ids = [d.id for d in letters]
            assert len(ids) == len(set(ids))
            certain = {m.id for m in self.models.values() if m.dead}
            maybe = {m.id for m in self.in_state("poisoned")}
            assert certain <= set(ids) <= certain | maybe

        @invariant()
        def stats_count_every_message_in_one_place(self) -> None:
            stats = self.run(self.backend.stats())
            for queue in QUEUES:
                counts = stats.queues.get(queue, QueueStats())
                mine = [m for m in self.models.values() if m.queue == queue]

                def count(*states: str, of: list[Model] = mine) -> int:
                    return sum(m.state in states for m in of)

                held = count("leased")
                maybe_held = count("short", "lapsed", "poisoned")
                assert counts.waiting == 0
                assert counts.scheduled == count("scheduled")
                assert counts.pending + counts.leased == count("pending") + held + maybe_held
                assert held <= counts.leased <= held + maybe_held
                dead = sum(m.dead for m in mine)
                assert dead <= counts.dead <= dead + count("poisoned")
            settled = len(self.in_state("settled"))
            assert settled <= stats.results <= settled + len(self.in_state("poisoned"))

        @rule()
        def inspect_each_message(self) -> None:
            """``inspect`` agrees with the model on every id (a rule: it costs a call per id)."""
            allowed = {
                "scheduled": {"scheduled"},
                "pending": {"pending"},
                "leased": {"leased"},
                "short": {"leased", "pending"},
                "lapsed": {"leased", "pending"},
                "poisoned": {"leased", "pending", "dead"},
            }
            for model in self.models.values():
                info = self.run(self.backend.inspect(model.id))
                assert info is not None, f"{model.id} is unknown to inspect"
                expected = {model.outcome} if model.state == "settled" else allowed[model.state]
                assert info.state in expected, f"{model.id}: {info.state} not in {expected}"
                if model.state in ("leased", "pending", "scheduled"):
                    assert (info.attempt, info.failures) == (model.attempt, model.failures)

    return MessageLife


@pytest.mark.slow
@pytest.mark.timeout(900)  # a failure shrinks through many examples, each waiting on leases
def test_message_life_matches_the_model(url_factory: Callable[[], str]) -> None:
    run_state_machine_as_test(build_machine(url_factory), settings=SETTINGS)
