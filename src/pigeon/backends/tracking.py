"""Skipping the store read that starts a wait, for messages this process stored itself.

A backend that pushes settle notifications (Redis pub/sub, PostgreSQL NOTIFY) makes every
waiter register, then read the store once (what settled before it registered is found that
way), then sleep until notified. For a message that this process stored while its listener
already heard every settle, that read cannot find anything the listener will not hear: the
settle comes after the enqueue, so its notification reaches the listener, unless the
connection is lost meanwhile (which wakes every waiter to read again anyway).

``Tracker`` keeps those ids (``track``, called just before the enqueue is sent, only while
the listener hears every settle), the outcomes heard for them (``hear``; kept for a waiter
that comes after the notification), and tells a waiter which ids it must still read
(``unheard``). Both maps keep at most ``LIMIT`` entries, oldest forgotten first: a waiter
for a forgotten id reads the store, as without tracking.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Any, Generic, TypeVar

from pigeon.message import Result

T = TypeVar("T")

#: Ids tracked (stored here, not settled yet) and outcomes kept for waiters still to come.
LIMIT = 10_000


class Tracker(Generic[T]):
    """See the module docstring. ``T`` is the outcome as a notification carries it; ``None``
    stands for "settled, read the store" (an outcome too big to travel, or none stored)."""

    __slots__ = ("_generation", "_heard", "_tracked")

    def __init__(self) -> None:
        self._generation = 0  # connections lost so far
        self._tracked: OrderedDict[str, int] = OrderedDict()  # id -> generation listening
        self._heard: OrderedDict[str, T | None] = OrderedDict()

    @property
    def pending(self) -> bool:
        """Whether some tracked id has not been heard of yet."""
        return bool(self._tracked)

    def __contains__(self, mid: object) -> bool:
        """Whether ``mid`` is tracked and not heard of yet."""
        return mid in self._tracked

    def lost(self) -> None:
        """The listening connection was lost: what was tracked may settle unheard."""
        self._generation += 1

    def track(self, ids: Collection[str]) -> None:
        """Note ids about to be stored while every settle is heard: call it before the
        enqueue is sent."""
        tracked, generation = self._tracked, self._generation
        for mid in ids:
            tracked[mid] = generation
        trim(tracked)

    def untrack(self, ids: Collection[str]) -> None:
        """Forget ids noted by ``track`` that the enqueue did not store now (it failed, or
        they were stored before and may have settled unheard)."""
        for mid in ids:
            self._tracked.pop(mid, None)

    def hear(self, mid: str, outcome: T | None) -> None:
        """A settle of ``mid`` was heard: keep its outcome if ``mid`` is tracked."""
        if self._tracked.pop(mid, None) is not None:
            self._heard[mid] = outcome
            trim(self._heard)

    def unheard(
        self,
        ids: Collection[str],
        listening: bool,
        decode: Callable[[T], Result],
        *,
        once: bool = False,
    ) -> tuple[dict[str, Result], list[str]]:
        """For a waiter about to read the store: (the outcomes already heard, the ids whose
        outcome must be read). Ids tracked while the current connection listened (and
        ``listening`` still) whose settle was not heard yet are in neither: their
        notification is still to come. ``once``: such an id is left out this time only
        (for a listener that cannot tell a connection that died unnoticed: a waiter that
        timed out reads the store next time)."""
        found: dict[str, Result] = {}
        unknown: list[str] = []
        heard, tracked, generation = self._heard, self._tracked, self._generation
        for mid in ids:
            if mid in heard:
                outcome = heard[mid]
                if outcome is None:
                    unknown.append(mid)
                else:
                    found[mid] = decode(outcome)
            elif not listening or tracked.get(mid) != generation:
                unknown.append(mid)
            elif once:
                tracked[mid] = -1  # no generation: read next time (still heard until then)
        return found, unknown


def trim(entries: OrderedDict[str, Any]) -> None:
    """Forget the oldest entries past ``LIMIT``.

    An OrderedDict, because finding the oldest entry of a plain dict (``next(iter(d))``)
    steps over every slot deleted before it until the dict is rebuilt: with entries
    evicted one by one that cost tens of microseconds per send and per settle."""
    while len(entries) > LIMIT:
        entries.popitem(last=False)
