"""The Tracker (pigeon.backends.tracking): which ids a waiter may skip reading.

The one property that matters: an id is left out of both answers of ``unheard`` (neither
found nor to be read) only if it was tracked while the current connection listened, not
untracked since, and its settle has not been heard. Anything else must be read or handed
over, or a waiter would sleep through an outcome that is already stored.
"""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pigeon.backends import tracking
from pigeon.backends.tracking import Tracker, trim
from pigeon.message import Result

IDS = st.sampled_from(["a", "b", "c", "d"])


def result(mid: str) -> Result:
    return Result(mid, "succeeded")


def test_an_id_tracked_while_listening_is_skipped_until_heard() -> None:
    tracker: Tracker[Result] = Tracker()
    tracker.track(["a"])
    assert tracker.unheard(["a", "b"], True, lambda r: r) == ({}, ["b"])
    tracker.hear("a", result("a"))
    assert tracker.unheard(["a"], True, lambda r: r) == ({"a": result("a")}, [])


def test_a_lost_connection_or_a_deaf_listener_makes_tracked_ids_read() -> None:
    tracker: Tracker[Result] = Tracker()
    tracker.track(["a"])
    assert tracker.unheard(["a"], False, lambda r: r) == ({}, ["a"])
    tracker.lost()
    assert tracker.unheard(["a"], True, lambda r: r) == ({}, ["a"])


def test_a_settle_heard_without_its_outcome_is_read() -> None:
    tracker: Tracker[Result] = Tracker()
    tracker.track(["a"])
    tracker.hear("a", None)
    assert tracker.unheard(["a"], True, lambda r: r) == ({}, ["a"])


def test_once_skips_an_id_one_time_only_but_still_keeps_what_is_heard() -> None:
    tracker: Tracker[Result] = Tracker()
    tracker.track(["a"])
    assert tracker.unheard(["a"], True, lambda r: r, once=True) == ({}, [])
    assert tracker.unheard(["a"], True, lambda r: r, once=True) == ({}, ["a"])
    tracker.hear("a", result("a"))
    assert tracker.unheard(["a"], True, lambda r: r, once=True) == ({"a": result("a")}, [])


def test_untracked_and_never_tracked_ids_are_read() -> None:
    tracker: Tracker[Result] = Tracker()
    tracker.track(["a", "b"])
    tracker.untrack(["a"])
    tracker.hear("c", result("c"))  # not tracked: nothing kept
    assert tracker.unheard(["a", "b", "c"], True, lambda r: r) == ({}, ["a", "c"])
    assert tracker.pending


def test_an_id_is_in_the_tracker_from_track_until_heard_or_untracked() -> None:
    tracker: Tracker[Result] = Tracker()
    tracker.track(["a", "b"])
    assert "a" in tracker
    assert "c" not in tracker
    tracker.hear("a", result("a"))
    tracker.untrack(["b"])
    assert "a" not in tracker
    assert "b" not in tracker
    assert not tracker.pending


def test_trim_forgets_the_oldest_first() -> None:
    entries = OrderedDict((str(i), i) for i in range(tracking.LIMIT + 3))
    trim(entries)
    assert len(entries) == tracking.LIMIT
    assert next(iter(entries)) == "3"


class TrackerModel(RuleBasedStateMachine):
    """Random track / untrack / hear / lost / unheard against a model of what may be
    skipped: a skipped id is always one whose settle is sure to be heard."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker: Tracker[Result] = Tracker()
        self.sure: set[str] = set()  # tracked on this connection, not heard, not untracked
        self.heard: dict[str, Result | None] = {}
        self.skipped_once: set[str] = set()

    @rule(mid=IDS)
    def track(self, mid: str) -> None:
        self.tracker.track([mid])
        self.sure.add(mid)
        self.skipped_once.discard(mid)

    @rule(mid=IDS)
    def untrack(self, mid: str) -> None:
        self.tracker.untrack([mid])
        self.sure.discard(mid)

    @rule(mid=IDS, with_outcome=st.booleans())
    def hear(self, mid: str, with_outcome: bool) -> None:
        outcome = result(mid) if with_outcome else None
        tracked = mid in self.sure or mid in self.skipped_once or self._tracked_stale(mid)
        self.tracker.hear(mid, outcome)
        if tracked:
            self.heard[mid] = outcome
        self.sure.discard(mid)
        self.skipped_once.discard(mid)

    def _tracked_stale(self, mid: str) -> bool:
        return mid in self.tracker._tracked

    @rule()
    def lost(self) -> None:
        self.tracker.lost()
        self.sure.clear()

    @rule(ids=st.lists(IDS, unique=True, min_size=1), listening=st.booleans(), once=st.booleans())
    def unheard(self, ids: list[str], listening: bool, once: bool) -> None:
        found, unknown = self.tracker.unheard(ids, listening, lambda r: r, once=once)
        for mid in ids:
            if mid in self.heard and self.heard[mid] is not None:
                assert found.get(mid) == self.heard[mid]
                continue
            skipped = mid not in found and mid not in unknown
            if skipped:
                assert listening, f"{mid} skipped while not listening"
                assert mid in self.sure, f"{mid} skipped though its settle may go unheard"
                if once:
                    self.sure.discard(mid)
                    self.skipped_once.add(mid)
            else:
                assert mid in unknown

    @invariant()
    def found_only_what_was_heard(self) -> None:
        found, _ = self.tracker.unheard(["a", "b", "c", "d"], True, lambda r: r)
        for mid, outcome in found.items():
            assert self.heard.get(mid) == outcome


TestTrackerModel = TrackerModel.TestCase
