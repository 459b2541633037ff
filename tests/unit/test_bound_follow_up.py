"""A task with options (``task.options(...)``) is a durable follow-up like the task itself,
and its follow-up messages carry those options."""

from __future__ import annotations

import pigeon
from pigeon.worker import Worker

from .conftest import StartWorker


async def test_a_task_with_options_runs_as_a_durable_follow_up_in_its_queue(
    app: pigeon.App, start_worker: StartWorker
) -> None:
    @app.task
    async def double(x: int) -> int:
        return 2 * x

    @app.task
    async def label(x: int) -> str:
        return f"#{x} in {pigeon.current().queue}"

    followers: Worker = await start_worker(queues=["default", "labels"])
    assert followers.queues == ["default", "labels"]

    promise = double.send(21).then(label.options(queue="labels"))

    assert await promise == "#42 in labels"
