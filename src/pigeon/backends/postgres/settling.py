"""How the PostgreSQL backend settles messages: outcomes applied by the schema's
``settle()`` function, and messages settled for good (``finish()``) by the backend itself
(poison, expired, cancelled).

Every function runs on a connection it is given, with the statements rendered for its
schema (``schema.render``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import msgspec

from pigeon import codec
from pigeon.backends.base import DEAD_LETTER_TTL, KEEP_FOR_DEPENDENTS, Done, FinalState, dead_reason
from pigeon.backends.shared import first_outcomes, verdicts
from pigeon.message import Failure, Outcome, Result


async def settle(conn: Any, sql: dict[str, str], outcomes: Sequence[Outcome]) -> list[bool]:
    """Apply ``outcomes`` in one call of the schema's ``settle`` function; per outcome,
    whether it was applied (see ``PostgresBackend.settle``)."""
    first = first_outcomes(outcomes)
    finals = sorted((o for o in first.values() if o.state != "retry"), key=lambda o: o.id)
    retries = sorted((o for o in first.values() if o.state == "retry"), key=lambda o: o.id)
    rows = await conn.fetch(
        sql["settle"],
        [o.id for o in finals],
        [o.attempt for o in finals],
        [o.state for o in finals],
        [float(o.result_ttl) for o in finals],
        [_result_record(o.id, o.state, o.value, o.error) for o in finals],
        [dead_reason(o.error) if o.state == "dead" else None for o in finals],
        [o.id for o in retries],
        [o.attempt for o in retries],
        [float(o.retry_in) for o in retries],
        KEEP_FOR_DEPENDENTS,
        DEAD_LETTER_TTL,
    )
    return verdicts(outcomes, first, {(r[0], r[1]) for r in rows})


async def reclaim(conn: Any, sql: dict[str, str]) -> None:
    """Poison, lapsed and expired messages: one transaction on ``conn``."""
    async with conn.transaction():
        rows = await conn.fetch(sql["reclaim"])
        done: list[Done] = []
        for r in rows:
            if r["kind"] == "poison":
                reason = (
                    f"poison: lease expired {r['expiries']} times without a settle "
                    "(the worker running it probably crashed)"
                )
                error = Failure("Poison", reason, id=r["id"])
            elif r["kind"] == "expired":
                error = Failure("Expired", "the message expired before it could run", id=r["id"])
            else:
                continue
            done.append(
                Done(
                    r["id"], r["queue"], r["task"], r["body"], "dead", None, error, r["result_ttl"]
                )
            )
        if done:
            await finish(conn, sql, done)


async def cancel(conn: Any, sql: dict[str, str], ids: list[str]) -> set[str]:
    """Settle the cancellable messages among ``ids`` as ``cancelled``, in the caller's
    transaction; the ids cancelled."""
    rows = await conn.fetch(sql["take_cancellable"], ids)
    done: list[Done] = []
    for r in rows:
        error = Failure("Cancelled", "cancelled before it ran", id=r["id"])
        done.append(
            Done(
                r["id"], r["queue"], r["task"], r["body"], "cancelled", None, error, r["result_ttl"]
            )
        )
    if done:
        await finish(conn, sql, done)
    return {d.id for d in done}


async def finish(conn: Any, sql: dict[str, str], done: list[Done]) -> None:
    """Settle messages for good, in the caller's transaction (their rows are deleted).

    The schema's ``finish`` function stores each outcome (and a dead letter for
    ``dead``), makes the messages waiting ``after`` them pending, advances the joins they
    are members of (firing those whose mode is satisfied) and notifies the waiters.
    """
    await conn.fetchval(
        sql["finish"],
        [d.id for d in done],
        [d.queue for d in done],
        [d.task for d in done],
        [d.body for d in done],
        [d.state for d in done],
        [float(d.result_ttl) for d in done],
        [_result_record(d.id, d.state, d.value, d.error) for d in done],
        [dead_reason(d.error) if d.state == "dead" else None for d in done],
        KEEP_FOR_DEPENDENTS,
        DEAD_LETTER_TTL,
    )


def _result_record(mid: str, state: str, value: msgspec.Raw | None, error: Failure | None) -> bytes:
    """The stored form of an outcome, but for settled_at (the database's, stored apart)."""
    return codec.encode_result_record(Result(mid, cast(FinalState, state), value, error))
