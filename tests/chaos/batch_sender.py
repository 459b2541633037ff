"""A sender process for the kill tests: ``python -m tests.chaos.batch_sender TOTAL``.

Sends ``chaos.work`` messages in batches (one ``App.enqueue`` each: one transaction) until
TOTAL are acknowledged, and keeps a journal (``PIGEON_CHAOS_JOURNAL``) that survives
SIGKILL at any moment:

- ``I <message>``: one line per message, written (one ``os.write`` for the batch) *before*
  the batch is sent: the send is in doubt from here on;
- ``A <id>``: one line per message, written after the backend acknowledged the batch;
- ``R <stored> <size>``: written by a sender that found a batch in doubt (its predecessor
  was killed between ``I`` and ``A``): how many of its messages were already stored. The
  batch is then sent again, the same messages with the same ids, and acknowledged.

Workers may run a message sent in doubt before it is acknowledged; with the re-send every
message the journal names ends up acknowledged, so the checker counts it.
Between batches the sender waits (with a deadline) until the queue's backlog is below
``PIGEON_CHAOS_BACKLOG``, so that sending lasts as long as the workers' run.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from pathlib import Path

import msgspec

import pigeon
from pigeon import codec
from pigeon.message import Message
from tests.chaos import chaos_app

BATCH = (50, 150)
BACKLOG_WAIT = 30.0


class Journal:
    """The sender's record of what it is sending and what was acknowledged."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _append(self, lines: list[str]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, "".join(f"{line}\n" for line in lines).encode())
        finally:
            os.close(fd)

    def intend(self, batch: list[Message]) -> None:
        self._append([f"I {codec.encode_message(m).decode()}" for m in batch])

    def acknowledge(self, ids: list[str]) -> None:
        self._append([f"A {mid}" for mid in ids])

    def recovered(self, stored: int, size: int) -> None:
        self._append([f"R {stored} {size}"])

    def read(self) -> tuple[dict[str, Message], set[str], list[tuple[int, int]]]:
        """Messages intended (by id, in order), ids acknowledged, recoveries made."""
        intended: dict[str, Message] = {}
        acknowledged: set[str] = set()
        recoveries: list[tuple[int, int]] = []
        if not self.path.exists():
            return intended, acknowledged, recoveries
        for line in self.path.read_bytes().split(b"\n")[:-1]:  # a torn last line is ignored
            kind, _, rest = line.decode().partition(" ")
            if kind == "I":
                try:
                    message = codec.decode_message(rest.encode())
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # torn by a kill mid-write: that batch was never sent
                intended[message.id] = message
            elif kind == "A":
                acknowledged.add(rest)
            elif kind == "R":
                stored, size = rest.split()
                recoveries.append((int(stored), int(size)))
        return intended, acknowledged, recoveries


async def backlog(app: pigeon.App) -> int:
    stats = await (await app.open()).stats()
    queue = stats.queues.get("default")
    return 0 if queue is None else queue.pending + queue.leased + queue.scheduled


async def send(total: int, journal: Journal, most_backlog: int) -> None:
    app = chaos_app.register(pigeon.App())
    rng = random.Random()
    work = app.tasks["chaos.work"]
    async with app:
        intended, acknowledged, _ = journal.read()
        in_doubt = [m for mid, m in intended.items() if mid not in acknowledged]
        if in_doubt:
            backend = await app.open()
            found = [await backend.inspect(m.id) for m in in_doubt]
            journal.recovered(sum(info is not None for info in found), len(in_doubt))
            ids = await app.enqueue(in_doubt)
            assert ids == [m.id for m in in_doubt], "a re-sent message was not kept as sent"
            journal.acknowledge(ids)
            acknowledged.update(ids)
        while len(acknowledged) < total:
            deadline = time.monotonic() + BACKLOG_WAIT
            while await backlog(app) > most_backlog:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the backlog stayed over {most_backlog} messages")
                await asyncio.sleep(0.01)
            size = min(rng.randint(*BATCH), total - len(acknowledged))
            batch = [work.message((rng.randint(1, 20),), {}) for _ in range(size)]
            journal.intend(batch)
            ids = await app.enqueue(batch)
            assert ids == [m.id for m in batch], "a message was not kept as sent"
            journal.acknowledge(ids)
            acknowledged.update(ids)


def main() -> None:
    total = int(sys.argv[1])
    journal = Journal(Path(os.environ["PIGEON_CHAOS_JOURNAL"]))
    asyncio.run(send(total, journal, int(os.environ.get("PIGEON_CHAOS_BACKLOG", "300"))))


if __name__ == "__main__":
    main()
