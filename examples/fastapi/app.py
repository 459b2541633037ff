"""A FastAPI app that hands slow work to pigeon workers and tells the client how it goes.

    uvicorn examples.fastapi.app:app                  # the web app
    pigeon worker examples.fastapi.tasks:app          # a worker (as many as you like)

- ``POST /reports`` sends ``build_report`` and answers 202 with the message id once the
  message is stored.
- ``GET /reports/{id}`` waits up to ``wait`` seconds for the outcome (long polling): 200 with
  the report (or the failure), 202 while it is still being written, 404 for an unknown id.
- ``GET /reports/{id}/events`` streams the task's progress as server-sent events
  (``event: progress``), then one ``event: result`` (or ``event: failure``), and ends;
  404 for an unknown id.
- ``POST /visits`` fires a task and answers at once, without waiting for the message to be
  stored: the lifespan stores it at the latest on shutdown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

import pigeon
from pigeon.integrations.asgi import lifespan

from . import tasks

pigeon_lifespan = lifespan(tasks.app)
app = FastAPI(title="pigeon example", lifespan=pigeon_lifespan)

# The App, for endpoints that take it as a dependency.
PigeonApp = Annotated[pigeon.App, Depends(pigeon_lifespan.get_app)]


class ReportRequest(BaseModel):
    title: str
    pages: int = Field(gt=0, le=100)
    seconds_per_page: float = Field(0.5, ge=0, le=10)


@app.post("/reports", status_code=202)
async def create_report(request: ReportRequest) -> dict[str, str]:
    promise = tasks.build_report.send(request.title, request.pages, request.seconds_per_page)
    return {"id": await promise.sent()}  # 202 means stored: a worker will run it


@app.get("/reports/{id}")
async def get_report(
    id: str, pigeon_app: PigeonApp, wait: Annotated[float, Query(gt=0, le=60)] = 10.0
) -> JSONResponse:
    promise = pigeon_app.promise(id, tasks.build_report)
    try:
        async with asyncio.timeout(wait):
            state, body = await _outcome(promise)
    except TimeoutError:
        info = await pigeon_app.backend_call(lambda backend: backend.inspect(id))
        if info is None:
            raise HTTPException(404, f"no message {id}") from None
        return JSONResponse({"id": id, "state": info.state}, status_code=202)
    return JSONResponse({"id": id, "state": state, **body})


@app.get("/reports/{id}/events")
async def report_events(id: str, pigeon_app: PigeonApp) -> StreamingResponse:
    if await pigeon_app.backend_call(lambda backend: backend.inspect(id)) is None:
        raise HTTPException(404, f"no message {id}")
    promise = pigeon_app.promise(id, tasks.build_report)
    return StreamingResponse(_events(promise), media_type="text/event-stream")


@app.post("/visits", status_code=202)
async def record_visit(path: str) -> None:
    tasks.record_visit.fire(path)  # no await: stored with the next batch of sends


async def _outcome(promise: pigeon.Promise[tasks.Report]) -> tuple[str, dict[str, Any]]:
    """What became of a report: ("succeeded", {"result": ...}) or the failure."""
    try:
        report = await promise
    except pigeon.Cancelled as exc:
        return "cancelled", {"error": {"type": "Cancelled", "message": str(exc)}}
    except pigeon.TaskError as exc:
        return exc.state, {"error": {"type": exc.type, "message": exc.message}}
    return "succeeded", {"result": dataclasses.asdict(report)}


async def _events(promise: pigeon.MessagePromise[tasks.Report]) -> AsyncIterator[str]:
    """Server-sent events: each progress report as it is seen, then the outcome."""
    updates: asyncio.Queue[pigeon.Progress | None] = asyncio.Queue()
    # The callback runs on the App's event loop, the server's: the lifespan made it its home.
    promise.on_progress(updates.put_nowait)
    outcome = asyncio.ensure_future(_outcome(promise))
    outcome.add_done_callback(lambda _: updates.put_nowait(None))
    try:
        while (report := await updates.get()) is not None:
            yield _event("progress", {"fraction": report.fraction, "text": report.text})
        state, body = outcome.result()
        yield _event("result" if state == "succeeded" else "failure", {"state": state, **body})
    finally:
        outcome.cancel()  # the client went away: stop waiting (the task itself goes on)


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"
