"""Type-checked by test_typing.py (never imported or run): code that mypy --strict accepts,
with the types pigeon's API gives it pinned by ``assert_type``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, assert_type

import pigeon
from pigeon import BoundTask, Failure, MessagePromise, Progress, Promise, Settled, Task

app = pigeon.App("memory://")


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task(retries=3, timeout=30)
async def resize(path: str, width: int) -> str:
    return path


@app.task
def notify(url: str) -> None:  # a sync task
    pass


@app.task(queue="emails")
def double(x: int) -> int:
    return 2 * x


@app.task
async def recover(failure: Failure) -> int:
    return -1


@app.task
async def total(values: list[int]) -> int:
    return sum(values)


@app.task
async def stamp(*, at: datetime, label: str = "") -> datetime:
    return at


@app.periodic(cron="*/5 * * * *", tz="Europe/Paris", queue="reports", retries=2)
async def report() -> int:
    return 0


@app.periodic(every=timedelta(minutes=1))
def sweep(keep: int = 3) -> None:  # sync; parameters with defaults are allowed
    pass


def tasks(plain: Task[[int, int], int], bound: BoundTask[[str, int], str]) -> None:
    """Tasks keep the function's parameters and (awaited) result."""


tasks(add, resize.options(delay=60, priority=9, key="a.png"))


async def sending() -> None:
    assert_type(add.send(1, 2), MessagePromise[int])
    assert_type(add.send(a=1, b=2), MessagePromise[int])
    assert_type(add.send(1, b=2), MessagePromise[int])
    assert_type(await add.send(1, 2), int)
    assert_type(add.send(1, 2).result(timeout=5), int)
    assert_type(double.send(21), MessagePromise[int])
    assert_type(notify.send("https://example.com"), MessagePromise[None])
    assert_type(stamp.send(at=datetime.now()), MessagePromise[datetime])
    assert_type(
        resize.options(delay=60, priority=9, key="a.png").send("a.png", 200), MessagePromise[str]
    )
    assert_type(resize.options(queue="images").send(path="b.png", width=1), MessagePromise[str])
    assert_type(resize.fire("b.png", 100), None)
    # a sent message's promise also knows when it is stored and how its task progresses
    assert_type(await add.send(1, 2).sent(), str)
    assert_type(add.send(1, 2).progress, Progress | None)
    assert_type(add.send(1, 2).on_progress(print), MessagePromise[int])
    assert_type(app.promise("some-id", add), MessagePromise[int])
    assert_type(resize.options(retries=0).fire("b.png", 100), None)
    assert_type(report.send(), MessagePromise[int])  # a periodic task can be sent like any other
    assert_type(sweep.send(keep=1), MessagePromise[None])
    # bulk sends: the calls are tuples of positional arguments or dicts of keyword ones
    assert_type(add.send_many([(1, 2), {"a": 3, "b": 4}]), list[Promise[int]])
    assert_type(add.send_many((i, i) for i in range(3)), list[Promise[int]])
    assert_type(resize.options(queue="images").send_many([("a.png", 1)]), list[Promise[str]])
    assert_type(resize.fire_many([("b.png", 100)]), None)
    assert_type(await Promise.all(add.send_many([(1, 2)])), list[int])
    assert_type(pigeon.current().tick, float | None)
    assert_type(pigeon.current().cancelled, bool)


async def following() -> None:
    p = add.send(1, 2)
    assert_type(p.then(double), Promise[int])
    assert_type(p.then(double).then(double), Promise[int])
    assert_type(p.then(lambda v: str(v)), Promise[str])
    assert_type(p.then(str), Promise[str])

    def chain(v: int) -> Promise[int]:
        return add.send(v, 1)

    assert_type(p.then(chain), Promise[int])  # a returned promise is adopted
    assert_type(p.catch(recover), Promise[int])
    assert_type(p.catch(lambda e: "fallback"), Promise[int | str])
    assert_type(p.finally_(notify), Promise[int])
    assert_type(p.finally_(lambda: None), Promise[int])
    assert_type(await p.then(lambda v: v * 2.5), float)
    assert_type(p.cancel(), Promise[bool])
    assert_type(p.status, Literal["pending", "succeeded", "failed", "cancelled", "dead"])


async def more_following() -> None:
    async def later(v: int) -> str:
        return str(v)

    assert_type(add.send(1, 2).then(later), Promise[str])


async def combining() -> None:
    ps = [add.send(1, 2), add.send(3, 4)]
    assert_type(Promise.all(ps), Promise[list[int]])
    assert_type(await Promise.all(ps), list[int])
    assert_type(Promise.any(ps), Promise[int])
    assert_type(Promise.race(ps), Promise[int])
    assert_type(Promise.all_settled(ps), Promise[list[Settled]])
    assert_type(Promise.all(ps).then(total), Promise[int])
    assert_type(Promise.resolve(3), Promise[int])
    assert_type(Promise.all(add.send(i, i) for i in range(3)), Promise[list[int]])
