"""Type-checked by test_typing.py (never imported or run): every line marked ``# E: code``
must be reported by mypy --strict with that error code, and no other line may be."""

from __future__ import annotations

from datetime import datetime

import pigeon
from pigeon import Promise

app = pigeon.App("memory://")


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task
async def resize(path: str, width: int) -> str:
    return path


@app.task
def notify(url: str) -> None:
    pass


@app.task
async def stamp(*, at: datetime) -> datetime:
    return at


def shout(text: str) -> str:
    return text.upper()


async def bad_sends() -> None:
    add.send("x", 2)  # E: arg-type
    add.send(1)  # E: call-arg
    add.send(1, 2, 3)  # E: call-arg
    add.send(1, 2, c=3)  # E: call-arg
    add.send(a=1, b="2")  # E: arg-type
    resize.options(delay=60, priority=9).send(1, 2)  # E: arg-type
    resize.fire("a.png")  # E: call-arg
    notify.send(None)  # E: arg-type
    stamp.send(datetime.now())  # E: call-arg
    add.options(priority="high")  # E: arg-type
    app.periodic(every=60, queues="high")  # E: call-arg
    app.periodic(cron="* * * * *", priority="high")  # E: arg-type
    add.send_many([1, 2])  # E: list-item
    add.send_many((1, 2))  # E: arg-type


async def bad_results() -> None:
    text: str = await add.send(1, 2)  # E: assignment
    number: int = add.send(1, 2).result(timeout=5)
    nothing: int = await notify.send("u")  # E: assignment, func-returns-value
    promised: Promise[str] = add.send(1, 2)  # E: assignment
    add.send(1, 2).then(shout)  # E: arg-type
    await add.send(1, 2).then(lambda v: v.upper())  # E: attr-defined
    await Promise.all([add.send(1, 2)]).then(lambda values: values + 1)  # E: operator
    bulk: list[Promise[str]] = add.send_many([(1, 2)])  # E: assignment
    print(text, number, nothing, promised, bulk)
