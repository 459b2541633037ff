"""What ``inspect`` tells of one message, as (label, text) rows: ``pigeon inspect`` and the
dashboard's detail page show the same, each in its own markup (escaped there).

Arguments and results are shown as JSON with every ``pigeon.Secret`` as ``***``. Times are
the backend's (``MessageInfo.sent_at``); the body's ``created_at`` (the sender's clock) only
stands in when the backend does not know.
"""

from __future__ import annotations

import json

import msgspec

from pigeon import codec
from pigeon.message import MessageInfo, Result
from pigeon.secret import redact as redact_secrets
from pigeon.timetext import format_when


def info_rows(info: MessageInfo, now: float, progress: str = "") -> list[tuple[str, str]]:
    """Where the message is and who holds it (its state aside): the rows that have a value."""
    rows = [
        ("queue", info.queue),
        ("task", info.task),
        ("attempt", str(info.attempt) if info.attempt else ""),
        ("failures", str(info.failures) if info.failures else ""),
        ("due", format_when(info.run_at, now) if info.state in ("scheduled", "pending") else ""),
        ("leased until", format_when(info.lease_until, now)),
        ("worker", info.worker or ""),
        ("cancel", "requested: its worker is stopping it" if info.cancel_requested else ""),
        ("progress", progress),
        ("reason", info.reason or ""),
    ]
    return [(label, text) for label, text in rows if text]


def result_rows(result: Result, now: float) -> list[tuple[str, str]]:
    """When it settled and its value (the error is each interface's to show)."""
    rows = [("settled", format_when(result.settled_at, now) if result.settled_at else result.state)]
    if result.value is not None:
        rows.append(("result", raw_json(bytes(result.value))))
    return rows


def body_rows(body: bytes, now: float, sent_at: float | None) -> list[tuple[str, str]]:
    """The stored message, as rows for ``inspect``: its arguments decoded as JSON. Times are
    the backend's: ``sent_at`` is when it stored the message (the body's ``created_at``, the
    sender's clock, only stands in for it when the backend does not know)."""
    try:
        m = codec.decode_message(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return [("message", f"undecodable ({len(body)} bytes): {exc}")]
    rows = [("args", raw_json(bytes(m.args))), ("kwargs", raw_json(bytes(m.kwargs)))]
    rows.append(("priority", str(m.priority)))
    rows.append(("max attempts", str(m.max_attempts)))
    if m.timeout is not None:
        rows.append(("timeout", f"{m.timeout:g}s"))
    rows.append(("lease", f"{m.lease:g}s"))
    if m.key is not None:
        rows.append(("key", m.key))
    if m.after is not None:
        rows.append(("runs after", f"{m.after} ({m.mode})"))
    if m.join is not None:
        rows.append(
            ("join", f"{m.join.mode} of {len(m.join.members)}: {', '.join(m.join.members)}")
        )
    sent = sent_at if sent_at is not None else m.created_at or None
    expires = m.expires_at
    if m.expires is not None and sent is not None:
        relative = sent + m.expires  # as the backend resolved it when it stored the message
        expires = relative if expires is None else min(expires, relative)
    if expires is not None:
        rows.append(("expires", format_when(expires, now)))
    elif m.expires is not None:
        rows.append(("expires", f"{m.expires:g}s after it was sent"))
    if sent is not None:
        rows.append(("sent", format_when(sent, now)))
    for name, value in sorted(m.headers.items()):
        rows.append((f"header {name}", value))
    return rows


def raw_json(raw: bytes) -> str:
    """Encoded arguments or a result as JSON text, with every pigeon.Secret shown as ***."""
    try:
        return json.dumps(redact_secrets(msgspec.json.decode(raw)), ensure_ascii=False)
    except msgspec.DecodeError:
        return f"({len(raw)} bytes that are not JSON)"
