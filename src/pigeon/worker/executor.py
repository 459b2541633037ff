"""Turn one delivery into one outcome: decode, run the task (or combine a join), report.

Nothing here talks to the backend except through the two calls it is given (reading the
outcomes a follow-up or a join depends on), and nothing here knows which backend it is.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import random
import traceback
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import msgspec

from pigeon import codec
from pigeon.context import Cancellation, Current, _current
from pigeon.errors import EncodeError
from pigeon.message import JOIN_TASK, Delivery, Failure, Message, Outcome, Progress, Result
from pigeon.signing import Signer
from pigeon.task import Task
from pigeon.worker.limits import Deferred, Gate

log = logging.getLogger("pigeon.worker")

_failure_encoder = msgspec.json.Encoder()


class _Call(NamedTuple):
    """What a delivery's task is called with, and for a ``finally`` follow-up the parent's
    outcome, which it settles with instead of its own result."""

    args: list[Any]
    kwargs: dict[str, Any]
    passthrough: Outcome | None


class Executor:
    """Runs deliveries for a worker: coroutines on the loop, sync functions in threads."""

    def __init__(
        self,
        tasks: dict[str, Task[Any, Any]],
        results: Callable[[Collection[str]], Awaitable[dict[str, Result]]],
        threads: int,
        flush: Callable[[], Awaitable[None]] | None = None,
        signer: Signer | None = None,
        max_payload: int | None = None,
        gate: Gate | None = None,
        on_start: Callable[[Delivery, Message], None] | None = None,
        reporter: Callable[[Progress], None] | None = None,
        around_sync: Callable[[Callable[[], Any]], Any] | None = None,
        around_async: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None,
    ) -> None:
        self.tasks = tasks
        # What each run of a task is surrounded with (``App.around_sync_run`` in the task's
        # thread, ``App.around_async_run`` on the loop): None, the default, adds nothing.
        self.around_sync = around_sync
        self.around_async = around_async
        self.gate = gate
        self.on_start = on_start
        self.reporter = reporter
        self.signer = signer
        self.max_payload = max_payload
        self._results = results
        self._flush = flush
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pigeon-task")
        self.threads_busy = 0

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def process(self, d: Delivery, cancellation: Cancellation | None = None) -> Outcome:
        """The outcome of one delivery. Never raises except CancelledError, and
        ``Deferred`` when the task's limits say it may not start yet.

        ``cancellation``, when given, is how the worker tells a running task that its
        message was cancelled: once it is requested, the task is not started, or an async
        one gets CancelledError, and the outcome is ``cancelled`` however the task ends.

        The steps, each of which may settle the delivery at once: decode the message,
        check its signature and size, run a join, find the task, build the call (a
        follow-up's from its parent's outcome), decode the arguments, pass the limits, run.
        """
        m = self._decode(d)
        if isinstance(m, Outcome):
            return m
        if m.join is not None and m.task == JOIN_TASK:
            return await self._join(d, m)
        task = self.tasks.get(m.task)
        if task is None:
            known = ", ".join(sorted(self.tasks)) or "none"
            return _dead(
                d,
                "TaskNotFound",
                f"no task named {m.task!r} is registered in this worker's app (known: {known})",
                ttl=m.result_ttl,
            )
        call = await self._arguments(d, m, task)
        if isinstance(call, Outcome):
            return call
        current = Current(
            m.id, m.task, m.queue, d.attempt, d.failures, m.headers, reporter=self.reporter
        )
        if cancellation is not None:
            if cancellation.requested:
                return _cancelled(d, m, "cancelled before it ran")
            cancellation.current = current
        return await self._admit(d, m, task, call, current, cancellation)

    def _decode(self, d: Delivery) -> Message | Outcome:
        """The delivery's message, or the dead outcome of one that may not run: undecodable,
        unsigned or badly signed, or over the payload limit."""
        try:
            m = codec.decode_message(d.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _dead(d, "UndecodableMessage", f"the message could not be decoded: {exc}")
        if self.signer is not None:
            refused = self.signer.check(m)
            if refused is not None:
                return _dead(d, "BadSignature", refused, ttl=m.result_ttl)
        if self.max_payload is not None:
            size = len(m.args) + len(m.kwargs)
            if size > self.max_payload:
                return _dead(
                    d,
                    "PayloadTooLarge",
                    f"the arguments are {size:,} bytes, over this worker's limit of"
                    f" {self.max_payload:,} bytes (App(max_payload=...))",
                    ttl=m.result_ttl,
                )
        return m

    async def _arguments(self, d: Delivery, m: Message, task: Task[Any, Any]) -> _Call | Outcome:
        """The decoded arguments to call ``task`` with, or the outcome that settles the
        delivery without a call (a follow-up whose parent's outcome passes through, invalid
        arguments)."""
        passthrough: Outcome | None = None
        if m.after is not None:
            made = await self._follow_up(d, m, task)
            if isinstance(made, Outcome):
                return made
            raw_args, raw_kwargs, passthrough = made
        else:
            raw_args, raw_kwargs = bytes(m.args), bytes(m.kwargs)
        try:
            args, kwargs = task.codec.decode_args(raw_args, raw_kwargs)
        except EncodeError as exc:
            return _dead(d, "InvalidArguments", str(exc), ttl=m.result_ttl)
        return _Call(args, kwargs, passthrough)

    async def _follow_up(
        self, d: Delivery, m: Message, task: Task[Any, Any]
    ) -> tuple[bytes, bytes, Outcome | None] | Outcome:
        """A follow-up's raw arguments from its parent's outcome (with the outcome to settle
        with instead of the result, for ``finally``), or the parent's outcome itself when it
        passes through (a rejection skips ``then``, a success skips ``catch``)."""
        assert m.after is not None
        parent = (await self._results([m.after])).get(m.after)
        if parent is None:
            return _dead(
                d,
                "ParentMissing",
                f"the outcome of {m.after}, which this follow-up runs after, is gone"
                " (expired or purged)",
                ttl=m.result_ttl,
            )
        fulfilled = parent.state == "succeeded"
        parent_outcome = _carry(d, m, parent)
        if m.mode == "then":
            if not fulfilled:
                return parent_outcome
            return b"[]", task.codec.follow_up_kwargs(_raw(parent.value)), None
        if m.mode == "catch":
            if fulfilled:
                return parent_outcome
            error = parent.error or Failure(
                parent.state, "the message did not succeed", id=parent.id
            )
            return b"[]", task.codec.follow_up_kwargs(_failure_encoder.encode(error)), None
        return b"[]", b"{}", parent_outcome

    async def _admit(
        self,
        d: Delivery,
        m: Message,
        task: Task[Any, Any],
        call: _Call,
        current: Current,
        cancellation: Cancellation | None,
    ) -> Outcome:
        """Run the call once the task's rate and concurrency limits admit it (at once for a
        task without limits); raises ``Deferred`` when they say not yet."""
        args, kwargs, passthrough = call
        limits = task.limits
        if limits is None or self.gate is None:
            return await self._execute(d, m, task, args, kwargs, current, cancellation, passthrough)
        try:
            bucket, place = limits.keys(args, kwargs)
        except Exception as exc:  # the task's rate_key/limit_key failed: the task's failure
            return self._failed(d, m, task, exc)
        try:
            async with self.gate.admit(limits, d, m.lease, bucket, place):
                return await self._execute(
                    d, m, task, args, kwargs, current, cancellation, passthrough
                )
        except Deferred as deferred:
            deferred.task, deferred.queue = m.task, m.queue
            raise

    async def _execute(
        self,
        d: Delivery,
        m: Message,
        task: Task[Any, Any],
        args: list[Any],
        kwargs: dict[str, Any],
        current: Current,
        cancellation: Cancellation | None,
        passthrough: Outcome | None,
    ) -> Outcome:
        if cancellation is not None and cancellation.requested:  # while it waited for a limit
            return _cancelled(d, m, "cancelled before it ran")
        if self.on_start is not None:
            self.on_start(d, m)
        try:
            value = await self._run(task, args, kwargs, m.timeout, current, cancellation)
            if self._flush is not None:
                await self._flush()  # sends made by the task are durable before it is done
            if cancellation is not None and cancellation.requested:
                return _cancelled(d, m)
            if passthrough is not None:
                return passthrough
            return Outcome(
                m.id,
                d.attempt,
                "succeeded",
                task.codec.encode_result(value),
                result_ttl=m.result_ttl,
            )
        except asyncio.CancelledError:
            if cancellation is not None and cancellation.requested:
                return _cancelled(d, m)
            raise
        except Exception as exc:
            if cancellation is not None and cancellation.requested:
                return _cancelled(d, m)
            return self._failed(d, m, task, exc)

    async def _run(
        self,
        task: Task[Any, Any],
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float | None,
        current: Current,
        cancellation: Cancellation | None = None,
    ) -> Any:
        token = _current.set(current)
        try:
            if timeout is None:  # most tasks: skip the timeout's bookkeeping on the hot path
                return await self._call(task, args, kwargs, cancellation)
            async with asyncio.timeout(timeout):
                return await self._call(task, args, kwargs, cancellation)
        except TimeoutError as exc:
            raise TaskTimeout(
                f"{task.name} did not finish within its timeout of {timeout} s"
            ) from exc
        finally:
            _current.reset(token)

    async def _call(
        self,
        task: Task[Any, Any],
        args: list[Any],
        kwargs: dict[str, Any],
        cancellation: Cancellation | None,
    ) -> Any:
        if task.is_async:
            if self.around_async is None:
                run = task.fn(*args, **kwargs)
            else:
                run = self.around_async(functools.partial(task.fn, *args, **kwargs))
            if cancellation is None:
                return await run
            return await _cancellable(run, cancellation)
        ctx = contextvars.copy_context()
        if self.around_sync is None:
            call = functools.partial(ctx.run, task.fn, *args, **kwargs)
        else:
            call = functools.partial(
                ctx.run, self.around_sync, functools.partial(task.fn, *args, **kwargs)
            )
        self.threads_busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        finally:
            self.threads_busy -= 1

    def _failed(self, d: Delivery, m: Message, task: Task[Any, Any], exc: Exception) -> Outcome:
        error = Failure(
            type(exc).__qualname__,
            str(exc),
            "".join(traceback.format_exception(exc)),
            m.id,
        )
        if d.failures + 1 < m.max_attempts:
            opts = task.defaults
            backoff = min(opts.retry_backoff_max, opts.retry_backoff * 2**d.failures)
            retry_in = backoff * random.uniform(0.5, 1.5)
            log.info(
                "%s %s failed (attempt %d of %d), retrying in %.2fs: %s",
                m.task,
                m.id,
                d.failures + 1,
                m.max_attempts,
                retry_in,
                error.type,
            )
            return Outcome(m.id, d.attempt, "retry", error=error, retry_in=retry_in)
        log.warning("%s %s failed for good, dead-lettered: %s: %s", m.task, m.id, error.type, exc)
        return Outcome(m.id, d.attempt, "dead", error=error, result_ttl=m.result_ttl)

    async def _join(self, d: Delivery, m: Message) -> Outcome:
        assert m.join is not None
        found = await self._results(m.join.members)
        outcome = combine(d, m, m.join.mode, [found.get(mid) for mid in m.join.members])
        if outcome is None:
            missing = [mid for mid in m.join.members if mid not in found]
            return _dead(
                d,
                "JoinMemberMissing",
                f"the outcomes of {len(missing)} members are gone (expired or purged):"
                f" {', '.join(missing[:5])}",
                ttl=m.result_ttl,
            )
        return outcome


class TaskTimeout(Exception):
    """A task ran past its timeout and was cancelled."""


def combine(d: Delivery, m: Message, mode: str, results: list[Result | None]) -> Outcome | None:
    """A join's outcome from its members' results (None: not settled), by JavaScript's rules.

    The backend fires a join as soon as its mode is satisfied, so members may still be
    pending; None means the outcomes the mode needs are missing (expired or purged).
    """
    present = [r for r in results if r is not None]
    ok = sorted((r for r in present if r.state == "succeeded"), key=lambda r: r.settled_at)
    bad = sorted((r for r in present if r.state != "succeeded"), key=lambda r: r.settled_at)
    complete = len(present) == len(results)

    def success(raw: bytes) -> Outcome:
        return Outcome(m.id, d.attempt, "succeeded", msgspec.Raw(raw), result_ttl=m.result_ttl)

    def failure(error: Failure) -> Outcome:
        return Outcome(m.id, d.attempt, "failed", error=error, result_ttl=m.result_ttl)

    if mode == "all":
        if bad:
            return failure(_error_of(bad[0]))
        if not complete:
            return None
        return success(b"[" + b",".join(_raw(r.value) for r in present) + b"]")
    if mode == "any":
        if ok:
            return success(_raw(ok[0].value))
        if not complete:
            return None
        summary = "; ".join(f"{e.type}: {e.message}" for e in map(_error_of, present))
        return failure(
            Failure("AggregateError", f"all {len(present)} promises were rejected: {summary}")
        )
    if mode == "race":
        if not present:
            return None
        first = min(present, key=lambda r: r.settled_at)
        return (
            success(_raw(first.value)) if first.state == "succeeded" else failure(_error_of(first))
        )
    if not complete:
        return None
    records = [
        b'{"status":"fulfilled","value":' + _raw(r.value) + b"}"
        if r.state == "succeeded"
        else b'{"status":"rejected","reason":' + _failure_encoder.encode(_error_of(r)) + b"}"
        for r in present
    ]
    return success(b"[" + b",".join(records) + b"]")


def _raw(value: msgspec.Raw | None) -> bytes:
    return bytes(value) if value is not None else b"null"


def _error_of(r: Result) -> Failure:
    if r.error is not None:
        return r.error
    return Failure(r.state.capitalize(), f"message {r.id} {r.state}", id=r.id)


def _carry(d: Delivery, m: Message, parent: Result) -> Outcome:
    """This message settles with its parent's outcome (a passed-through value or error)."""
    if parent.state == "succeeded":
        return Outcome(m.id, d.attempt, "succeeded", parent.value, result_ttl=m.result_ttl)
    return Outcome(m.id, d.attempt, "failed", error=_error_of(parent), result_ttl=m.result_ttl)


async def _cancellable(coro: Awaitable[Any], cancellation: Cancellation) -> Any:
    """Await an async task's coroutine where ``cancellation.request()`` can cancel it.

    The request cancels the asyncio task running this (the worker's run of the message), so
    the CancelledError surfaces inside the task's own code; once it has been handled here
    the cancel is withdrawn (``uncancel``), so that the worker can still settle the outcome.
    """
    running = asyncio.current_task()
    assert running is not None
    cancellation.task = running
    try:
        return await coro
    finally:
        cancellation.task = None
        if cancellation.requested and running.cancelling():
            running.uncancel()


def _cancelled(d: Delivery, m: Message, why: str = "cancelled while it ran") -> Outcome:
    log.info("%s %s %s (attempt %d)", m.task, m.id, why, d.attempt)
    error = Failure("Cancelled", why, id=m.id)
    return Outcome(m.id, d.attempt, "cancelled", error=error, result_ttl=m.result_ttl)


def _dead(d: Delivery, kind: str, reason: str, ttl: float = 86400.0) -> Outcome:
    log.warning("message %s dead-lettered: %s: %s", d.id, kind, reason)
    return Outcome(d.id, d.attempt, "dead", error=Failure(kind, reason, id=d.id), result_ttl=ttl)
