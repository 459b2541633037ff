"""Priorities across queues: in which order a worker's fetch asks for its queues.

The policy (``pigeon worker -q high,default``):

- A queue listed earlier has precedence: a fetch takes every due message of ``high`` it has
  room for before it takes any of ``default``.
- So that a constant flood of ``high`` never starves ``default``, one fetch in
  ``FAIR_EVERY`` (the 10th, 20th, ...) asks for the queues in rotated order, each queue after
  the first taking its turn at the front. With two queues, ``default`` thus comes first in
  one fetch in ten: when every queue is full, a queue listed later gets at least about a
  tenth of the worker's fetches (a share of its slots), and all of them when the queues
  before it are empty.

Within one queue the backend's order holds: highest ``priority`` first, then earliest due,
then id.
"""

from __future__ import annotations

from collections.abc import Sequence

#: One fetch in this many serves the queues in rotated order.
FAIR_EVERY = 10


def fetch_order(queues: Sequence[str], fetch_number: int) -> list[str]:
    """The order in which fetch number ``fetch_number`` (counted from 1) asks for ``queues``.

    The order given, except on every ``FAIR_EVERY``-th fetch, where the queues are rotated
    by 1, 2, ..., len(queues) - 1 places in turn, so each queue after the first gets to be
    first once in ``FAIR_EVERY * (len(queues) - 1)`` fetches.
    """
    order = list(queues)
    if len(order) < 2 or fetch_number <= 0 or fetch_number % FAIR_EVERY:
        return order
    turn = fetch_number // FAIR_EVERY
    shift = 1 + (turn - 1) % (len(order) - 1)
    return order[shift:] + order[:shift]
