"""The SQLite backend's paused queues, on a connection the caller gives (in its transaction).

The ``pauses`` table holds one row per paused queue; the fetch's ``priorities`` statement
skips a queue whose row is live (``until`` NULL or later than now), so no write and no
extra round trip is added to a fetch. See ``sql/queries.sql`` (pause, resume, paused).
"""

from __future__ import annotations

import sqlite3

from pigeon.backends.shared import until_passed
from pigeon.backends.sqlite.rows import queries
from pigeon.message import Pause


def store_pause(
    db: sqlite3.Connection, queue: str, reason: str | None, until: float | None, now: float
) -> Pause:
    """Pause ``queue`` (or renew its pause, keeping its since); ValueError when ``until`` is
    not after ``now``, before anything is written."""
    if until is not None and until <= now:
        raise until_passed(queue, until, now)
    row = db.execute(queries()["pause"], (queue, reason, now, until)).fetchone()
    return Pause(*row)


def drop_pause(db: sqlite3.Connection, queue: str, now: float) -> bool:
    """Resume ``queue``: whether it was paused (a pause expired by ``now`` was not)."""
    row = db.execute(queries()["resume"], (queue, now)).fetchone()
    return row is not None and bool(row[0])


def live_pauses(db: sqlite3.Connection, now: float) -> dict[str, Pause]:
    """The pauses live at ``now``, by queue."""
    return {row[0]: Pause(*row) for row in db.execute(queries()["paused"], (now,))}
