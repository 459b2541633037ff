"""The database side of the SQLite backend: one connection, its thread, its transactions.

:class:`Store` is synchronous. :class:`~pigeon.backends.sqlite.backend.SQLiteBackend` runs
every call of it on the one thread that owns the connection, so nothing here locks: SQLite's
own write lock (``BEGIN IMMEDIATE``) orders this process's writes with every other's. The
statements are those of ``sql/queries.sql`` (see :mod:`pigeon.backends.sqlite.rows`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import TypeVar, TypeVarTuple, cast

import msgspec

from pigeon import codec
from pigeon.backends.base import (
    DEAD_LETTER_TTL,
    EVENTS_KEPT,
    KEEP_FOR_DEPENDENTS,
    SWEEP_CHUNK,
    Done,
    FinalState,
    MessagePage,
    MessageQuery,
    dead_reason,
    join_fired,
)
from pigeon.backends.info import StoredDead, StoredMessage, message_info
from pigeon.backends.shared import EVENTS_PRUNE_EVERY, Tally, first_outcomes, verdicts
from pigeon.backends.sqlite.listing import list_page
from pigeon.backends.sqlite.pausing import drop_pause, live_pauses, store_pause
from pigeon.backends.sqlite.rows import (
    enqueue_rows,
    json_array,
    message_row,
    queries,
    schema,
    sent_at,
)
from pigeon.errors import BackendError, ConfigError
from pigeon.message import (
    DeadLetter,
    Delivery,
    Event,
    Failure,
    Lease,
    Message,
    MessageInfo,
    Outcome,
    Pause,
    Progress,
    Result,
    Slot,
    Stats,
    Take,
    WorkerInfo,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: SQLite 3.35 added RETURNING, which every batched step here relies on.
MIN_SQLITE = (3, 35, 0)
SCHEMA_VERSION = 6
#: Messages per enqueue transaction: a bigger batch (a bulk send) is written in several, so
#: that workers never wait long for the write lock.
ENQUEUE_CHUNK = 1000
#: The tables sweep() deletes expired rows from, each by its own statement.
_SWEPT = ("results", "history", "keys", "dead", "workers", "locks", "buckets", "slots", "progress")

_json_encode = msgspec.json.Encoder().encode
_worker_decoder = msgspec.json.Decoder(WorkerInfo)
_progress_decoder = msgspec.json.Decoder(Progress)
_event_decoder = msgspec.json.Decoder(Event)


class Store:
    """The database side of :class:`~pigeon.backends.sqlite.backend.SQLiteBackend`.

    Every method runs on the backend's one thread and is one transaction. The connection is
    made on first use, so it belongs to that thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self._sql = queries()

    def call(self, job: Callable[[Store, *Ts], T], *args: *Ts) -> T:
        """Run one method, reporting SQLite's errors as BackendError."""
        try:
            return job(self, *args)
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite database {self.path!r}: {exc}") from exc

    def open(self) -> None:
        self._connection()

    def now(self) -> float:
        """The backend clock: the database's own reading of the host clock, never the
        caller's (a process whose notion of time is off cannot move deadlines)."""
        row = self._connection().execute(self._sql["now"]).fetchone()
        return float(row[0])

    def close(self) -> None:
        self._closed = True
        if self._db is not None:
            self._db.close()
            self._db = None

    # connection and transactions ---------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            if self._closed:
                raise BackendError(f"the SQLite backend for {self.path!r} is closed")
            self._db = self._connect()
        return self._db

    def _connect(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigError(
                f"the SQLite backend needs SQLite {'.'.join(map(str, MIN_SQLITE))} or later "
                f"(for RETURNING); this Python uses {sqlite3.sqlite_version}"
            )
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise ConfigError(
                f"cannot open the SQLite database {self.path!r}: the directory {directory!r} "
                "does not exist; create it, or point the URL at an existing directory"
            )
        db = sqlite3.connect(self.path, isolation_level=None, cached_statements=512)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigError(
                    f"cannot put the SQLite database {self.path!r} in WAL mode (it stays in "
                    f"{mode!r} mode); keep it on a local file system, not a network share"
                )
            db.execute("PRAGMA synchronous = NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"the SQLite database {self.path!r} has schema version {version}, made by "
                    f"a newer pigeon (this one knows {SCHEMA_VERSION}); upgrade pigeon"
                )
            if version < SCHEMA_VERSION:
                # executescript runs the whole script; closing on failure rolls it back.
                db.executescript(f"BEGIN IMMEDIATE;\n{schema()}\nCOMMIT;")
        except BaseException:
            db.close()
            raise
        return db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding SQLite's write lock from its first statement."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent snapshot across several statements."""
        db = self._connection()
        db.execute("BEGIN")
        try:
            yield db
        finally:
            if db.in_transaction:
                db.execute("COMMIT")

    # queue -------------------------------------------------------------------------------

    def enqueue(self, messages: Sequence[Message]) -> list[str]:
        ids: list[str] = []
        for at in range(0, len(messages), ENQUEUE_CHUNK):
            now = self.now()
            with self._write() as db:
                ids.extend(enqueue_rows(db, messages[at : at + ENQUEUE_CHUNK], now))
        return ids

    def fetch(
        self, queues: Sequence[str], limit: int, worker: str, lease: float | None
    ) -> tuple[list[Delivery], int]:
        """Lease up to ``limit`` messages; also returns how many messages it dead-lettered."""
        now = self.now()
        length = None if lease is None else float(lease)
        deliveries: list[Delivery] = []
        with self._write() as db:
            finished = self._reclaim(db, now)
            for queue in queues:
                if len(deliveries) >= limit:
                    break
                for (priority,) in db.execute(self._sql["priorities"], (queue, now)).fetchall():
                    wanted = limit - len(deliveries)
                    if wanted <= 0:
                        break
                    params = (worker, now, length, queue, priority, wanted)
                    rows = db.execute(self._sql["lease"], params).fetchall()
                    rows.sort()  # RETURNING order is unspecified: (due, id)
                    deliveries.extend(
                        Delivery(r[1], r[2], r[3], r[4], r[5], max(now - r[0], 0.0)) for r in rows
                    )
        return deliveries, finished

    def anything_due(self, queues: Sequence[str]) -> bool:
        """Whether a fetch of ``queues`` would find work: cheap reads, no write lock."""
        db = self._connection()
        now = self.now()
        if db.execute(self._sql["lapsed"], (now,)).fetchone() is not None:
            return True
        for queue in queues:
            for (priority,) in db.execute(self._sql["priorities"], (queue, now)).fetchall():
                if db.execute(self._sql["due_at"], (queue, priority, now)).fetchone() is not None:
                    return True
        return False

    def _reclaim(self, db: sqlite3.Connection, now: float) -> int:
        """Turn lapsed leases into poison or due messages, and expired messages into dead."""
        done: list[Done] = []
        for mid, queue, task, ttl, expiries, body in db.execute(
            self._sql["take_poison"], (now,)
        ).fetchall():
            reason = (
                f"poison: lease expired {expiries} times without a settle "
                "(the worker running it probably crashed)"
            )
            error = Failure("Poison", reason, id=mid)
            done.append(Done(mid, queue, task, body, "dead", None, error, ttl))
        db.execute(self._sql["reclaim_lapsed"], (now,))
        for mid, queue, task, ttl, body in db.execute(self._sql["take_expired"], (now,)).fetchall():
            error = Failure("Expired", "the message expired before it could run", id=mid)
            done.append(Done(mid, queue, task, body, "dead", None, error, ttl))
        if done:
            self._finish(db, done, now)
        return len(done)

    def extend(self, leases: Sequence[Lease]) -> set[str]:
        now = self.now()
        with self._write() as db:
            rows = db.execute(
                self._sql["extend"], (now, json_array([(x.id, x.attempt) for x in leases]))
            )
            held = {(mid, attempt) for mid, attempt in rows.fetchall()}
        return {x.id for x in leases if (x.id, x.attempt) not in held}

    def release(self, leases: Sequence[Lease], delay: float) -> int:
        now = self.now()
        due = now + max(delay, 0.0)
        with self._write() as db:
            rows = db.execute(
                self._sql["release"], (due, json_array([(x.id, x.attempt) for x in leases]))
            )
            return len(rows.fetchall())

    def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        now = self.now()
        first = first_outcomes(outcomes)
        finals = [o for o in first.values() if o.state != "retry"]
        retries = [o for o in first.values() if o.state == "retry"]
        applied: set[tuple[str, int]] = set()
        with self._write() as db:
            if finals:
                taken = db.execute(
                    self._sql["take_held"], (json_array([(o.id, o.attempt) for o in finals]),)
                )
                done: list[Done] = []
                for mid, attempt, queue, task, body in taken.fetchall():
                    o = first[(mid, attempt)]
                    state = cast(FinalState, o.state)
                    done.append(Done(mid, queue, task, body, state, o.value, o.error, o.result_ttl))
                    applied.add((mid, attempt))
                if done:
                    self._finish(db, done, now)
            if retries:
                params = json_array([(o.id, o.attempt, o.retry_in) for o in retries])
                applied.update(
                    tuple(row) for row in db.execute(self._sql["retry"], (now, params)).fetchall()
                )
        return verdicts(outcomes, first, applied)

    def _finish(self, db: sqlite3.Connection, done: list[Done], now: float) -> None:
        """Settle messages for good, in the caller's transaction.

        Stores each outcome (and a dead letter for ``dead``), makes the messages waiting
        ``after`` them pending and advances the joins they are members of. The message rows
        are already deleted by the caller.
        """
        ids = json_array([d.id for d in done])
        followed = {row[0] for row in db.execute(self._sql["release_followers"], (ids,)).fetchall()}
        memberships: list[tuple[str, str]] = db.execute(
            self._sql["take_memberships"], (ids,)
        ).fetchall()
        members = {member for _, member in memberships}
        states: dict[str, str] = {}
        results: list[tuple[str, str, float, bytes]] = []
        history: list[tuple[str, str, str, str, str | None, float]] = []
        letters: list[tuple[str, str, str, str, float, float, bytes]] = []
        for mid, queue, task, body, state, value, error, ttl in done:
            states[mid] = state
            if state == "dead":
                reason = dead_reason(error)
                letters.append((mid, queue, task, reason, now, now + DEAD_LETTER_TTL, body))
            if ttl <= 0:
                if mid not in followed and mid not in members:
                    continue
                ttl = KEEP_FOR_DEPENDENTS
            encoded = codec.encode_result_record(Result(mid, state, value, error, now))
            results.append((mid, state, now + ttl, encoded))
            kind = error.type if error is not None else None
            history.append((mid, queue, task, state, kind, now + ttl))
        if results:
            db.executemany(self._sql["store_result"], results)
            db.executemany(self._sql["store_history"], history)
        if letters:
            db.executemany(self._sql["store_dead"], letters)
        if memberships:
            self._advance_joins(db, memberships, states)

    def _advance_joins(
        self, db: sqlite3.Connection, memberships: list[tuple[str, str]], states: dict[str, str]
    ) -> None:
        counts: dict[str, list[int]] = {}
        for join_id, member in memberships:
            count = counts.setdefault(join_id, [0, 0])
            count[0] += 1
            count[1] += states[member] == "succeeded"
        for join_id, (settled, succeeded) in counts.items():
            row = db.execute(self._sql["count_join"], (settled, succeeded, join_id)).fetchone()
            if row is not None and join_fired(*row):
                db.execute(self._sql["fire_join"], (join_id,))
                db.execute(self._sql["wake_join"], (join_id,))

    # results -----------------------------------------------------------------------------

    def results(self, ids: Collection[str]) -> dict[str, Result]:
        db = self._connection()
        rows = db.execute(self._sql["results"], (json_array(list(ids)), self.now())).fetchall()
        found = (codec.decode_result_record(body) for (body,) in rows)
        return {result.id: result for result in found}

    # control -----------------------------------------------------------------------------

    def cancel(self, ids: Collection[str]) -> list[str]:
        now = self.now()
        wanted = json_array(list(ids))
        with self._write() as db:
            done: list[Done] = []
            for mid, queue, task, ttl, body in db.execute(
                self._sql["take_cancellable"], (wanted,)
            ).fetchall():
                error = Failure("Cancelled", "cancelled before it ran", id=mid)
                done.append(Done(mid, queue, task, body, "cancelled", None, error, ttl))
            if done:
                self._finish(db, done, now)
            db.execute(self._sql["flag_cancel"], (wanted,))
        cancelled = {d.id for d in done}
        return list(dict.fromkeys(mid for mid in ids if mid in cancelled))

    def cancelling(self, leases: Sequence[Lease]) -> set[str]:
        params = (json_array([(x.id, x.attempt) for x in leases]),)
        return {
            mid for mid, _ in self._connection().execute(self._sql["cancelling"], params).fetchall()
        }

    def lock(self, name: str, owner: str, ttl: float) -> bool:
        db = self._connection()
        now = self.now()
        # Most calls come from workers that do not lead: a read says no without taking the
        # write lock that every other writer on the file would wait for.
        if db.execute(self._sql["lock_held_by_other"], (name, owner, now)).fetchone() is not None:
            return False
        with self._write() as db:
            # now again: the write lock may have been waited for
            return (
                db.execute(self._sql["lock"], (name, owner, self.now(), ttl)).fetchone() is not None
            )

    def unlock(self, name: str, owner: str) -> None:
        with self._write() as db:
            db.execute(self._sql["unlock"], (name, owner))

    def schedules(self, names: Collection[str]) -> dict[str, float]:
        params = (json_array(list(names)),)
        rows = self._connection().execute(self._sql["schedules"], params).fetchall()
        return {name: float(mark) for name, mark in rows}

    def mark_schedules(self, marks: Mapping[str, float]) -> None:
        with self._write() as db:
            # Text, not bytes: SQLite reads a blob as JSONB.
            params = (_json_encode({name: float(m) for name, m in marks.items()}).decode(),)
            db.execute(self._sql["mark_schedules"], params)

    def take(self, takes: Sequence[Take]) -> list[float]:
        """GCRA, one take at a time in order, all in one transaction."""
        waits: list[float] = []
        with self._write() as db:
            now = self.now()  # under the write lock: another take may have been waited for
            buckets = list(dict.fromkeys(t.bucket for t in takes))
            tats: dict[str, float] = dict(
                db.execute(self._sql["buckets"], (json_array(buckets),)).fetchall()
            )
            changed: dict[str, float] = {}
            for t in takes:
                tat = tats.get(t.bucket, now)
                wait = max(0.0, tat - (t.burst - 1) * t.interval - now)
                if wait <= t.hold:
                    tats[t.bucket] = changed[t.bucket] = max(tat, now) + t.interval
                waits.append(wait)
            if changed:
                db.executemany(self._sql["set_bucket"], list(changed.items()))
        return waits

    def acquire(self, slots: Sequence[Slot]) -> list[bool]:
        got: list[bool] = []
        with self._write() as db:
            now = self.now()  # under the write lock, as for take
            for slot in slots:
                params = (slot.name, slot.holder, now, float(slot.ttl), slot.limit)
                got.append(db.execute(self._sql["acquire"], params).fetchone() is not None)
        return got

    def release_slots(self, slots: Sequence[Slot]) -> None:
        with self._write() as db:
            db.execute(
                self._sql["release_slots"], (json_array([(x.name, x.holder) for x in slots]),)
            )

    # progress and events -----------------------------------------------------------------

    def report(self, progress: Sequence[Progress], ttl: float) -> None:
        with self._write() as db:
            expires_at = self.now() + ttl
            db.executemany(
                self._sql["report"], [(p.id, expires_at, _json_encode(p)) for p in progress]
            )

    def progress(self, ids: Collection[str]) -> dict[str, Progress]:
        rows = (
            self._connection()
            .execute(self._sql["progress"], (json_array(list(ids)), self.now()))
            .fetchall()
        )
        found: dict[str, Progress] = {}
        for (body,) in rows:
            try:
                p = _progress_decoder.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("skipping an undecodable progress report: %s", exc)
                continue
            found[p.id] = p
        return found

    def publish(self, events: Sequence[Event]) -> None:
        with self._write() as db:
            db.executemany(self._sql["publish"], [(_json_encode(e),) for e in events])
            last = int(db.execute(self._sql["last_rowid"]).fetchone()[0])
            # Prune now and then (each time the seq crosses a multiple of EVENTS_PRUNE_EVERY):
            # a range delete on the primary key, so cheap, and rare.
            if last // EVENTS_PRUNE_EVERY != (last - len(events)) // EVENTS_PRUNE_EVERY:
                db.execute(self._sql["prune_events"], (last - EVENTS_KEPT,))

    def read_events(self, after: int | None, limit: int) -> tuple[int, list[Event]]:
        """Up to ``limit`` events after seq ``after`` (None: the end of the log, so none)
        and the seq to read after next time."""
        db = self._connection()
        if after is None:
            return int(db.execute(self._sql["last_event"]).fetchone()[0]), []
        rows = db.execute(self._sql["read_events"], (after, limit)).fetchall() if limit > 0 else []
        events: list[Event] = []
        for _, body in rows:
            try:
                events.append(_event_decoder.decode(body))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # Passed over (the cursor moves on), rather than stop every reader here.
                log.warning("skipping an undecodable event: %s", exc)
        return (int(rows[-1][0]) if rows else after), events

    def dead_letters(self, queue: str | None, limit: int) -> list[DeadLetter]:
        rows = self._connection().execute(self._sql["dead_letters"], (queue, limit)).fetchall()
        return [DeadLetter(*row) for row in rows]

    def requeue(self, ids: Collection[str]) -> int:
        now = self.now()
        with self._write() as db:
            letters = db.execute(self._sql["take_dead"], (json_array(list(ids)),)).fetchall()
            if not letters:
                return 0
            forgotten = (json_array([row[0] for row in letters]),)
            db.execute(self._sql["forget_results"], forgotten)
            db.execute(self._sql["forget_history"], forgotten)
            rows = []
            for mid, queue, task, body in letters:
                try:
                    m = codec.decode_message(body)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    # Requeued as it was: the worker that fetches it dead-letters it again,
                    # with the reason, rather than this call failing for every id.
                    m = Message(mid, task, queue)
                rows.append(message_row(m, "pending", now, None, body, now))
            db.executemany(self._sql["requeue_message"], rows)
        return len(letters)

    def purge_dead(self, ids: Collection[str] | None) -> int:
        with self._write() as db:
            if ids is None:
                return db.execute(self._sql["purge_all_dead"]).rowcount
            return db.execute(self._sql["purge_dead"], (json_array(list(ids)),)).rowcount

    def purge(self, queue: str) -> int:
        with self._write() as db:
            return db.execute(self._sql["purge"], (queue,)).rowcount

    def inspect(self, id: str) -> MessageInfo | None:
        now = self.now()
        with self._read() as db:
            row = db.execute(self._sql["inspect_message"], (id,)).fetchone()
            stored = db.execute(self._sql["inspect_result"], (id, now)).fetchone()
            dead = db.execute(self._sql["inspect_dead"], (id,)).fetchone() if row is None else None
        result = codec.decode_result_record(stored[0]) if stored is not None else None
        message = None
        if row is not None:
            state, queue, task, attempt, failures, due, lease_until, worker, body, cx = row
            message = StoredMessage(
                state, queue, task, attempt, failures, due, lease_until, worker, body,
                bool(cx), sent_at(body),
            )  # fmt: skip
        return message_info(id, now, message, result, StoredDead(*dead) if dead else None)

    def stats(self) -> Stats:
        now = self.now()
        tally = Tally()
        with self._read() as db:
            for queue, state, later, n in db.execute(self._sql["count_messages"], (now,)):
                tally.message(queue, state, later, n)
            for queue, n in db.execute(self._sql["count_dead"]):
                tally.dead_letters(queue, n)
            results = db.execute(self._sql["count_results"], (now,)).fetchone()[0]
            infos = db.execute(self._sql["live_workers"], (now,)).fetchall()
            paused = live_pauses(db, now)
        return tally.stats(results, (_worker_decoder.decode(info) for (info,) in infos), paused)

    def pause(self, queue: str, reason: str | None, until: float | None) -> Pause:
        with self._write() as db:
            return store_pause(db, queue, reason, until, self.now())

    def resume(self, queue: str) -> bool:
        with self._write() as db:
            return drop_pause(db, queue, self.now())

    def paused(self) -> dict[str, Pause]:
        return live_pauses(self._connection(), self.now())

    def list_messages(self, query: MessageQuery) -> MessagePage:
        now = self.now()
        with self._read() as db:
            return list_page(db, self._sql, query, now)

    def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        now = self.now()
        body = _json_encode(msgspec.structs.replace(info, last_seen=now))
        with self._write() as db:
            db.execute(self._sql["heartbeat"], (info.id, now + ttl, body))

    def retire(self, worker: str) -> None:
        with self._write() as db:
            db.execute(self._sql["retire"], (worker,))

    def sweep(self) -> int:
        now = self.now()
        removed = 0
        for table in _SWEPT:
            statement = self._sql[f"sweep_{table}"]
            while True:
                with self._write() as db:
                    count = db.execute(statement, (now, SWEEP_CHUNK)).rowcount
                removed += count
                if count < SWEEP_CHUNK:
                    break
        with self._write() as db:
            db.execute(self._sql["sweep_joins"])
            db.execute(self._sql["sweep_members"])
        return removed
