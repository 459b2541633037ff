"""A Jepsen-style checker: what was sent, what ran, what is visible; nothing else counts.

The test records every acknowledged send; the task records every execution (start and end,
with the attempt) in a history file; after the faults the test drains the work and reads
every visible outcome. Each message is then classified:

- ok: acknowledged, exactly one visible outcome, succeeded;
- lost: acknowledged, but no visible outcome after the drain;
- duplicated: its task body ran to the end more than once (at-least-once allows this for
  messages in flight when a worker died);
- unexpected: it ran, or has an outcome, but was never acknowledged as sent;
- stale: the visible outcome was written by an attempt older than the newest attempt that
  started, i.e. by a worker whose lease had been taken over.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from pigeon.message import Result

#: Tables of every checked run, printed at the end of the pytest session.
TABLES: list[str] = []


@dataclass
class History:
    starts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    ends: Counter[str] = field(default_factory=Counter)
    started_at: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, path: Path) -> History:
        history = cls()
        if not path.exists():
            return history
        for line in path.read_text().splitlines():
            kind, mid, attempt, _pid, stamp = line.split()
            if kind == "S":
                history.starts[mid].append(int(attempt))
                history.started_at[mid].append(float(stamp))
            else:
                history.ends[mid] += 1
        return history


@dataclass
class Verdict:
    sent: int
    ok: int
    lost: list[str]
    duplicated: list[str]
    unexpected: list[str]
    stale: list[str]
    faults: int

    def table(self, title: str) -> str:
        names = ("sent", "ok", "lost", "dup", "unexp", "stale", "faults")
        head = " ".join(f"{n:>7}" for n in names)
        counts = (self.sent, self.ok, len(self.lost), len(self.duplicated))
        counts += (len(self.unexpected), len(self.stale), self.faults)
        row = " ".join(f"{n:>7}" for n in counts)
        return f"{title}\n{head}\n{row}"


def check(sent: list[str], history: History, outcomes: dict[str, Result], faults: int) -> Verdict:
    """Classify every message of a run (see the module docstring)."""
    acknowledged = set(sent)
    lost = [mid for mid in sent if mid not in outcomes]
    duplicated = sorted(mid for mid, n in history.ends.items() if n > 1)
    unexpected = sorted((set(history.starts) | set(history.ends) | set(outcomes)) - acknowledged)
    stale: list[str] = []
    ok = 0
    for mid in sent:
        result = outcomes.get(mid)
        if result is None:
            continue
        if result.state == "succeeded" and result.value is not None:
            value: dict[str, Any] = msgspec.json.decode(bytes(result.value))
            newest = max(history.starts.get(mid, [0]))
            if value["attempt"] < newest:
                stale.append(mid)
                continue
            ok += 1
    return Verdict(len(sent), ok, lost, duplicated, unexpected, stale, faults)
