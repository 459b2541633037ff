"""What a final outcome writes: the message's tombstone (fenced on the sequence its record
was read at) holding its outcome and dead letter, and, in the same atomic batch, the
records of the followers it releases and the joins it advances, each fenced on its own
sequence. A message without followers or joins (almost all) settles with one
compare-and-set publish: an atomic batch costs the server several milliseconds, one at a
time per stream (nats-server 2.15), a publish a fraction of one.

An atomic batch holds at most 1,000 messages, so a message with more followers and joins
than fit settles in several steps: the first batch stores the tombstone (fenced), the
outcome and as many releases as fit, and leaves the rest listed in the tombstone; each
``release_rest`` batch then releases the next ones and shortens the lists (fenced on the
tombstone's sequence, so two resumers never release one twice). A settler that dies in
between leaves the lists for any backend object's next fetch to finish (``view.unreleased``).
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from pigeon.backends.base import DEAD_LETTER_TTL, KEEP_FOR_DEPENDENTS, dead_reason, join_fired
from pigeon.backends.nats import records as r
from pigeon.backends.nats.batch import MAX_BATCH, Write
from pigeon.backends.nats.view import View
from pigeon.message import Failure, Result

#: Followers and joins a final settle changes in its own batch (with the tombstone and the
#: outcome); the rest are released by ``release_rest`` batches right after it.
RELEASE_BUDGET = MAX_BATCH - 2


def finish(
    view: View,
    rec: r.Record,
    state: str,
    value: msgspec.Raw | None,
    error: Failure | None,
    now: float,
    ttl: float | None = None,
) -> list[Write]:
    """The writes that settle ``rec`` for good as ``state`` at ``now`` (see the module
    docstring); ``ttl`` is the outcome's (default: the message's ``result_ttl``)."""
    subjects = view.subjects
    id = rec.id
    ttl = rec.result_ttl if ttl is None else ttl
    if ttl <= 0 and (rec.followers or rec.joins):
        ttl = KEEP_FOR_DEPENDENTS
    keep_until = now + ttl if ttl > 0 else now
    tomb = r.Record(
        id=id,
        queue=rec.queue,
        task=rec.task,
        state="dead" if state == "dead" else "done",
        outcome=state,
        error=r.failure_type(error),
        sent_at=rec.sent_at,
        key=rec.key,
    )
    if state == "dead":
        tomb.reason = dead_reason(error)
        tomb.died_at = now
        tomb.dead_until = now + DEAD_LETTER_TTL
        tomb.body = rec.body
    if ttl > 0:
        tomb.result = r.result_field(Result(id, state, value, error, now))  # type: ignore[arg-type]
        tomb.result_until = keep_until
    tomb.until = max(keep_until, tomb.dead_until)
    released = _release(view, state, rec.followers, rec.joins, RELEASE_BUDGET)
    tomb.followers, tomb.joins = released.followers, released.joins  # still to release
    subject = subjects.message(id)
    expected = view.seq_of(subject)
    if tomb.until > now:
        writes = [Write(subject, r.encode(tomb), expected, r.ttl_header(tomb.until - now))]
    else:
        writes = [Write(subject, b"", expected, r.DELETE_TTL)]
    return writes + released.writes


def outcome_state(view: View, id: str, now: float) -> str | None:
    """The final state of ``id``'s kept outcome (or of its tombstone), if any."""
    kept = view.kept.get(id)
    if kept is not None and kept.until > now:
        return kept.result.state
    rec = view.records.get(id)
    if rec is not None and rec.state not in r.LIVE and rec.until > now:
        return rec.outcome
    return None


def release_rest(view: View, id: str, now: float) -> list[Write] | None:
    """The next batch of a step left unfinished: for a settled message's tombstone, the
    release of the followers and joins it still lists (those past the first batch's
    budget, or left by a settler that died in between), with its lists shortened; for a
    join, the links to the members it still lists (``link_rest``). None: nothing left."""
    tomb = view.records.get(id)
    if tomb is not None and tomb.state in r.LIVE:
        return link_rest(view, tomb, now)
    if tomb is None or not (tomb.followers or tomb.joins):
        return None
    released = _release(view, tomb.outcome or "", tomb.followers, tomb.joins, MAX_BATCH - 1)
    rest = msgspec.structs.replace(tomb, followers=released.followers, joins=released.joins)
    subject = view.subjects.message(id)
    headers = r.ttl_header(tomb.until - now) if tomb.until > now else r.DELETE_TTL
    return [Write(subject, r.encode(rest), view.seq_of(subject), headers), *released.writes]


class _Released(NamedTuple):
    writes: list[Write]
    #: The followers and joins left for a later batch.
    followers: list[str]
    joins: list[str]


def _release(
    view: View, state: str, followers: list[str], joins: list[str], budget: int
) -> _Released:
    """The writes that make ``followers`` due and count ``state`` in ``joins``, at most
    ``budget`` records (the rest returned, in order)."""
    changed: dict[str, r.Record] = {}
    f = 0
    while f < len(followers) and len(changed) < budget:
        fid = followers[f]
        follower = view.records.get(fid)
        if follower is not None and follower.state == "waiting":
            changed[fid] = msgspec.structs.replace(follower, state="pending")
        f += 1
    j = 0
    while j < len(joins) and (len(changed) < budget or joins[j] in changed):
        jid = joins[j]
        j += 1
        join_rec = changed.get(jid) or view.records.get(jid)
        if join_rec is None or join_rec.join is None or join_rec.join.fired:
            continue
        counts = join_rec.join
        settled = counts.settled + 1
        succeeded = counts.succeeded + (state == "succeeded")
        fired = join_fired(counts.mode, counts.total, settled, succeeded)
        new = r.JoinCounts(counts.mode, counts.total, settled, succeeded, fired)
        next_state = "pending" if fired and join_rec.state == "waiting" else join_rec.state
        changed[jid] = msgspec.structs.replace(join_rec, join=new, state=next_state)
    writes = []
    for other in changed.values():
        other_subject = view.subjects.message(other.id)
        writes.append(Write(other_subject, r.encode(other), view.seq_of(other_subject)))
    return _Released(writes, followers[f:], joins[j:])


def link_rest(view: View, join: r.Record, now: float) -> list[Write] | None:
    """The next batch that tells a join's members past its first batch that they belong
    to it (each member's record lists the join), fenced on the join's record: a member
    that settled meanwhile is counted in the join at once instead."""
    if not join.linking or join.join is None:
        return None
    part, rest = join.linking[: MAX_BATCH - 1], join.linking[MAX_BATCH - 1 :]
    counts = join.join
    settled, succeeded = counts.settled, counts.succeeded
    changed: dict[str, r.Record] = {}
    for member in part:
        held = changed.get(member) or view.records.get(member)
        if held is not None and held.state in r.LIVE:
            changed[member] = msgspec.structs.replace(held, joins=[*held.joins, join.id])
            continue
        state = outcome_state(view, member, now)
        if state is not None:
            settled += 1
            succeeded += state == "succeeded"
    fired = counts.fired or join_fired(counts.mode, counts.total, settled, succeeded)
    new = msgspec.structs.replace(
        join,
        linking=rest,
        join=r.JoinCounts(counts.mode, counts.total, settled, succeeded, fired),
        state="pending" if fired and join.state == "waiting" else join.state,
    )
    subject = view.subjects.message(join.id)
    writes = [Write(subject, r.encode(new), view.seq_of(subject))]
    for other in changed.values():
        other_subject = view.subjects.message(other.id)
        writes.append(Write(other_subject, r.encode(other), view.seq_of(other_subject)))
    return writes
