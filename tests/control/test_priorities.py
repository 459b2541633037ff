"""Priorities across queues on every backend: the worker's policy (``-q high,default`` serves
the first queue first, and one fetch in ten puts the others first so that a flood never
starves them) is the unit tests' own, run here against each backend's fetch."""

from __future__ import annotations

from tests.unit.test_queue_priority import (
    test_a_flood_of_the_first_queue_does_not_starve_the_second,
    test_the_first_queue_is_taken_first_when_both_have_due_messages,
)

__all__ = [
    "test_a_flood_of_the_first_queue_does_not_starve_the_second",
    "test_the_first_queue_is_taken_first_when_both_have_due_messages",
]
