"""The id ranges a listing walks (``shared.walk_of``, ``above``): made of hex digits and
dashes, so that they compare with ids alike in byte order and under any collation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pigeon.backends.base import MessageQuery
from pigeon.backends.shared import ID_TOP, above, id_at, id_time, walk_of
from pigeon.message import new_id


@pytest.mark.parametrize(
    ("prefix", "bound"),
    [("01a", "01b"), ("01a-ff", "01b"), ("0190a1b2-3c49", "0190a1b2-3c4a"), ("fff", ID_TOP)],
)
def test_above_is_the_next_prefix_in_hex(prefix: str, bound: str) -> None:
    assert above(prefix) == bound


@given(st.integers(min_value=0, max_value=10**13), st.integers(min_value=1, max_value=36))
def test_every_id_with_a_prefix_lies_below_above_of_it(ms: int, cut: int) -> None:
    h = f"{ms:012x}"
    mid = f"{h[:8]}-{h[8:12]}{new_id()[13:]}"
    prefix = mid[:cut]
    assert prefix <= mid < above(prefix)


def test_a_time_range_is_the_range_of_the_ids_made_in_it() -> None:
    mid = new_id()
    made = id_time(mid)
    assert made is not None
    walk = walk_of(MessageQuery(since=made, until=made))
    assert walk.lo <= mid < walk.hi
    assert walk_of(MessageQuery(since=made + 0.002)).lo > mid
    assert walk_of(MessageQuery(until=made - 0.002)).hi <= mid
    assert id_at(made) == mid[:13]


def test_a_key_that_stands_for_nothing_walks_nothing() -> None:
    assert walk_of(MessageQuery(key="k")).empty
    mid = new_id()
    walk = walk_of(MessageQuery(key="k"), mid)
    assert walk.lo == mid
    assert mid < walk.hi
