"""JavaScript's Promise combinators (``all``, ``any``, ``race``, ``all_settled``) over asyncio
futures, as ECMAScript defines them: ``all`` keeps input order and rejects with the first
rejection; ``any`` rejects with ``AggregateError`` (errors in input order) when every input
rejects; ``race([])`` never settles; among inputs already settled, the first in input order
wins. ``pigeon.promise`` turns its inputs (promises and plain values) into these futures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from pigeon.errors import AggregateError
from pigeon.message import Settled


async def _settled_in_order(
    futures: list[asyncio.Future[Any]],
) -> Any:
    """Yield (index, future) as they settle; already-settled inputs in input order first."""
    order = {id(f): i for i, f in enumerate(futures)}
    first = [(i, f) for i, f in enumerate(futures) if f.done()]
    for pair in first:
        yield pair
    pending = {f for f in futures if not f.done()}
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for f in sorted(done, key=lambda f: order[id(f)]):
            yield order[id(f)], f


def _cancel_rest(futures: Collection[asyncio.Future[Any]]) -> None:
    for f in futures:
        if not f.done():
            f.cancel()
        elif not f.cancelled():
            f.exception()  # retrieved: a rejection nobody waits for is not an error


async def _all(futures: list[asyncio.Future[Any]]) -> list[Any]:
    try:
        async for _, f in _settled_in_order(futures):
            error = f.exception()
            if error is not None:
                raise error
        return [f.result() for f in futures]
    finally:
        _cancel_rest(futures)


async def _any(futures: list[asyncio.Future[Any]]) -> Any:
    try:
        async for _, f in _settled_in_order(futures):
            if f.exception() is None:
                return f.result()
        raise AggregateError([f.exception() for f in futures])  # type: ignore[misc]
    finally:
        _cancel_rest(futures)


async def _race(futures: list[asyncio.Future[Any]]) -> Any:
    if not futures:
        await asyncio.get_running_loop().create_future()  # JavaScript: race([]) never settles
    try:
        async for _, f in _settled_in_order(futures):
            return f.result()
    finally:
        _cancel_rest(futures)
    raise AssertionError("unreachable")


async def _all_settled(futures: list[asyncio.Future[Any]]) -> list[Settled]:
    try:
        async for _ in _settled_in_order(futures):
            pass
    finally:
        _cancel_rest(futures)
    return [
        Settled("fulfilled", value=f.result())
        if f.exception() is None
        else Settled("rejected", reason=f.exception())
        for f in futures
    ]


#: Each combinator by its name (``JoinMode``), over the futures of its inputs in input order.
COMBINE: dict[str, Callable[[list[asyncio.Future[Any]]], Awaitable[Any]]] = {
    "all": _all,
    "any": _any,
    "race": _race,
    "all_settled": _all_settled,
}
