"""``nats://`` and ``tls://``: the Backend contract on NATS JetStream (nats-server 2.12+).

Design
    One stream (``?stream=``, subjects ``S.>``) that keeps one message per subject: each
    subject is a record, its last message's stream sequence the record's version
    (``records``). A pigeon message's record (state, attempt, lease holder and deadline,
    due time, failures, lost leases, body, followers, joins) lives at ``S.m.<id>`` for its
    whole life; when it settles the record becomes a tombstone (``done``, or ``dead``: the
    dead letter) that holds the outcome, with ``Nats-TTL`` = the longer of the result TTL
    and the dead letter's (whole seconds, rounded up; readers check the exact expiries it
    stores), so an id is never stored twice. Keys are at ``S.k.<key>`` with the result
    TTL. (The outcome is in the tombstone rather than at a subject of its own, ``S.r.<id>``,
    so that a settle without followers or joins is one compare-and-set publish, about
    0.25 ms, instead of an atomic batch: nats-server 2.15 commits those one at a time per
    stream at about 5 ms each. Measured on one process and a local server: 20,000 sends/s,
    4,600 fetch+settle/s.)

Changes are compare-and-set
    Every change publishes the new record with ``Nats-Expected-Last-Subject-Sequence`` =
    the sequence it was read at; a change of several records is one ADR-50 atomic batch
    (``batch``): enqueue with its key and its links, settle with its tombstone, followers
    and joins. That is the fencing: a settle reads the record, checks that it is
    still leased as the outcome's attempt, and writes at the sequence it read; a takeover,
    extension, cancel or other settle in between moves the sequence and the server refuses
    the batch, which is then retried on the refreshed record (``writes.attempt``, bounded:
    reads of a replicated stream may lag, so a refusal can also mean the view was stale).
    JetStream's own ack state is never used (it does not fence).

Finding work
    Each backend object keeps a *view* of the stream (``view``): one ordered push consumer
    (last message per subject, then every new one) feeds in-memory indexes: per queue a
    heap of due records by (priority, due time, id), a heap of scheduled records by due
    time and one of leases by deadline. So fetch is O(batch): it pops candidates off the
    heap and leases them with one pipelined compare-and-set each (one round trip for the
    batch); a candidate another worker took first is refused and skipped. Lapsed leases
    come off the lease heap (poison at ``max_deliveries``). Waits are pushed: the consumer
    delivers every change, which wakes waiting fetches, ``wait`` and event readers. The
    price: every backend object holds the stream's records in memory and receives every
    change (fine for thousands of live messages and a handful of processes; per-queue
    index subjects with filtered consumers are the way past that, see
    docs/architecture.md).

Time
    nats-server has no time call; every stored message carries the server's timestamp. A
    *barrier* publishes a tick on the object's own subject ``S.t.<client>`` and waits until
    the consumer delivers it: the view then holds all stored before, and the tick's stamp
    against ``time.monotonic()`` gives the offset to the server's clock (``now =
    monotonic() + offset``, never moving back, resampled when older than 2 s). Due times,
    leases and expiries are all on that clock, never the worker's wall clock.
"""

from pigeon.backends.nats.backend import NatsBackend
from pigeon.backends.nats.batch import (
    BatchConflict,
    BatchError,
    BatchUnknown,
    Write,
    publish_atomic,
)
from pigeon.backends.nats.connections import Target, open_stream, parse_url

__all__ = [
    "BatchConflict",
    "BatchError",
    "BatchUnknown",
    "NatsBackend",
    "Target",
    "Write",
    "open_stream",
    "parse_url",
    "publish_atomic",
]
