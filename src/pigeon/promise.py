"""``Promise[R]``: waiting for outcomes, callbacks, combinators, durable follow-ups.

Promises follow JavaScript's Promise semantics, translated to Python. A promise of a sent
message (``MessagePromise``) waits for the outcome stored by the backend; ``then``/``catch``/
``finally_`` with a Python callable derive a ``LocalPromise`` whose handler runs in this
process; with a ``Task`` they store a durable follow-up message that a worker runs even if
this process exits. ``Promise.all/any/race/all_settled`` combine locally, and become a join
stored in the backend when followed by ``.then(task)``.

Every coroutine here runs on the App's event loop; ``await p`` from another loop and
``p.result()`` from sync code are bridged to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar, overload, runtime_checkable

import msgspec

from pigeon.backends.base import Backend
from pigeon.codec import TaskCodec
from pigeon.combinators import COMBINE
from pigeon.errors import Cancelled, PigeonError, ResultNotKept
from pigeon.message import (
    JOIN_TASK,
    JoinMode,
    JoinSpec,
    Message,
    Mode,
    Progress,
    Result,
    Settled,
    new_id,
)
from pigeon.resolution import (
    Known,
    Status,
    finished,
    outcome_error,
    replay,
    resolve_result,
    run_detached,
    status_of,
)
from pigeon.watchers import ProgressWatcher, ResultWatcher

R = TypeVar("R", covariant=True)
S = TypeVar("S")
T = TypeVar("T")
S_co = TypeVar("S_co", covariant=True)

log = logging.getLogger("pigeon")

# Status and outcome_error (now in pigeon.resolution) are still importable from here.
__all__ = [
    "CombinedPromise",
    "Host",
    "LocalPromise",
    "MessagePromise",
    "Promise",
    "ResultWatcher",
    "Status",
    "TaskLike",
    "outcome_error",
]


class Host(Protocol):
    """What a promise needs of the App it came from (``pigeon.App`` is one).

    A small protocol rather than the App itself, so that this module sits below
    ``pigeon.app`` and ``pigeon.task`` in the import graph.
    """

    async def call(self, coro: Awaitable[T]) -> T: ...
    def call_sync(self, coro: Awaitable[T], timeout: float | None = None) -> T: ...
    def start(self, coro: Awaitable[T]) -> asyncio.Future[T] | concurrent.futures.Future[T]: ...
    async def open(self) -> Backend: ...
    async def backend_call(self, op: Callable[[Backend], Awaitable[T]]) -> T: ...
    def send_later(
        self,
        make: Awaitable[list[Message]],
        task: TaskLike[Any],
        parents: Sequence[MessagePromise[Any]] = (),
    ) -> MessagePromise[Any]: ...

    @property
    def watcher(self) -> ResultWatcher: ...
    @property
    def progress_watcher(self) -> ProgressWatcher: ...


@runtime_checkable
class TaskLike(Protocol[S_co]):
    """What a promise needs of a task (``pigeon.Task`` and ``BoundTask`` are ones): its name,
    the codec its results decode with, and the follow-up message that runs it with an
    outcome. ``send`` carries the result type, so that ``p.then(task)`` is typed."""

    @property
    def name(self) -> str: ...
    @property
    def app(self) -> Host: ...
    @property
    def codec(self) -> TaskCodec: ...
    def follow_up(self, after: str | None, mode: Mode | None) -> Message: ...
    def send(self, *args: Any, **kwargs: Any) -> Promise[S_co]: ...


class Promise(Generic[R]):
    """The eventual outcome of work: awaitable, with ``result()``, callbacks and combinators."""

    _app: Host | None
    _outcome: Known | None = None  # (fulfilled, value or exception) once known here

    def __await__(self) -> Generator[Any, None, R]:
        return self._get().__await__()

    async def _get(self) -> R:
        if self._app is None:
            return await self._resolve()
        return await self._app.call(self._resolve())

    async def _resolve(self) -> R:
        """Wait for the outcome (on the App's loop): the value, or raise the rejection."""
        raise PigeonError(f"{type(self).__name__} cannot be awaited")

    def result(self, timeout: float | None = None) -> R:
        """Block until the outcome arrives (sync code): the value, or raise the rejection.

        Raises pigeon.Timeout when ``timeout`` seconds pass first (the work goes on).
        """
        if self._app is None:
            return run_detached(self._resolve(), timeout)
        return self._app.call_sync(self._resolve(), timeout)

    @property
    def status(self) -> Status:
        """The outcome as known here, without asking the backend: ``pending`` until seen."""
        return status_of(self._outcome)

    def _remember(self, fulfilled: bool, value: Any) -> None:
        if self._outcome is None:
            self._outcome = (fulfilled, value)

    def _peek(self) -> Known | None:
        """The outcome if it is known here without waiting (the combinators' "already
        settled"), else None."""
        return self._outcome

    # callbacks -------------------------------------------------------------------------

    @overload
    def then(self, handler: TaskLike[S]) -> Promise[S]: ...
    @overload
    def then(self, handler: Callable[[R], Promise[S]]) -> Promise[S]: ...
    @overload
    def then(self, handler: Callable[[R], Awaitable[S]]) -> Promise[S]: ...
    @overload
    def then(self, handler: Callable[[R], S]) -> Promise[S]: ...
    def then(self, handler: Any) -> Promise[Any]:
        """Run ``handler`` with the value once this fulfils; a rejection passes through.

        A callable runs in this process; its return value (awaited if awaitable, adopted if a
        Promise) fulfils the returned promise, and a raise rejects it. A Task becomes a
        durable follow-up message, run on a worker with the value as its one argument.
        """
        if _is_task(handler):
            return self._follow(handler, "then")
        return self._derive(self._then(handler))

    @overload
    def catch(self, handler: TaskLike[S]) -> Promise[R | S]: ...
    @overload
    def catch(self, handler: Callable[[BaseException], Promise[S]]) -> Promise[R | S]: ...
    @overload
    def catch(self, handler: Callable[[BaseException], Awaitable[S]]) -> Promise[R | S]: ...
    @overload
    def catch(self, handler: Callable[[BaseException], S]) -> Promise[R | S]: ...
    def catch(self, handler: Any) -> Promise[Any]:
        """Run ``handler`` with the exception if this rejects; its value recovers.

        A Task follow-up receives a ``pigeon.Failure`` record (type, message, traceback, id).
        """
        if _is_task(handler):
            return self._follow(handler, "catch")
        return self._derive(self._catch(handler))

    def finally_(self, handler: Any) -> Promise[R]:
        """Run ``handler()`` (no argument) when this settles; the outcome passes through
        unless the handler raises."""
        if _is_task(handler):
            return self._follow(handler, "finally")
        return self._derive(self._finally(handler))

    async def _then(self, handler: Callable[[Any], Any]) -> Any:
        return await _adopt(handler(await self._resolve()))

    async def _catch(self, handler: Callable[[BaseException], Any]) -> Any:
        try:
            return await self._resolve()
        except Exception as exc:
            return await _adopt(handler(exc))

    async def _finally(self, handler: Callable[[], Any]) -> Any:
        try:
            value = await self._resolve()
        except Exception:
            await _adopt(handler())
            raise
        await _adopt(handler())
        return value

    def _derive(self, coro: Awaitable[Any]) -> Promise[Any]:
        if self._app is None:
            return LocalPromise(None, asyncio.ensure_future(coro))
        return LocalPromise(self._app, self._app.start(coro))

    def _follow(self, task: TaskLike[Any], mode: Mode) -> Promise[Any]:
        raise PigeonError(
            f"a durable follow-up ({mode}({task.name})) needs the promise of a sent message or"
            " a combinator of such promises; this promise was derived by a local callback."
            " Attach the task to the message's promise, or use a local callback here"
        )

    def cancel(self) -> Promise[bool]:
        """Cancel the message: at once if it has not started, through its worker if it runs.

        Fulfils with True when the message was cancelled, or was running and its worker was
        asked to stop it (an async task gets CancelledError, a sync one sees
        ``pigeon.current().cancelled``); False when it had already settled. Awaiting the
        message then raises ``pigeon.Cancelled`` (unless it finished first).
        """
        raise PigeonError(f"a {type(self).__name__} has no message to cancel")

    # combinators -----------------------------------------------------------------------

    # Each combinator has two signatures: promises only (the common case, where mypy infers
    # the value type), and promises mixed with plain values.

    @overload
    @staticmethod
    def all(promises: Iterable[Promise[T]]) -> Promise[list[T]]: ...
    @overload
    @staticmethod
    def all(promises: Iterable[Promise[T] | T]) -> Promise[list[T]]: ...
    @staticmethod
    def all(promises: Iterable[Any]) -> Promise[list[Any]]:
        """Fulfils with every value in input order; rejects with the first rejection."""
        return CombinedPromise(list(promises), "all")

    @overload
    @staticmethod
    def any(promises: Iterable[Promise[T]]) -> Promise[T]: ...
    @overload
    @staticmethod
    def any(promises: Iterable[Promise[T] | T]) -> Promise[T]: ...
    @staticmethod
    def any(promises: Iterable[Any]) -> Promise[Any]:
        """Fulfils with the first value; rejects with AggregateError if every input rejects."""
        return CombinedPromise(list(promises), "any")

    @overload
    @staticmethod
    def race(promises: Iterable[Promise[T]]) -> Promise[T]: ...
    @overload
    @staticmethod
    def race(promises: Iterable[Promise[T] | T]) -> Promise[T]: ...
    @staticmethod
    def race(promises: Iterable[Any]) -> Promise[Any]:
        """Settles as the first input settles (stays pending for no input)."""
        return CombinedPromise(list(promises), "race")

    @staticmethod
    def all_settled(promises: Iterable[Promise[Any] | Any]) -> Promise[list[Settled]]:
        """Fulfils, never rejects, with a ``Settled`` record per input, in input order."""
        return CombinedPromise(list(promises), "all_settled")

    @staticmethod
    def resolve(value: T) -> Promise[T]:
        """A promise already fulfilled with ``value`` (a promise is adopted)."""
        promise = CombinedPromise([value], "race")
        if not isinstance(value, Promise):
            promise._remember(True, value)  # settled now, as combinators must see it
        return promise


class _PassThrough:
    """How to decode the value of a follow-up that may pass its parent's value through.

    ``finally`` always passes the parent's outcome through; ``catch`` does when the parent
    fulfilled. That value is the parent's, so it decodes as the parent's result
    (``decoder``), not as the follow-up task's.
    """

    def __init__(self, mode: Mode, decoder: TaskLike[Any] | None) -> None:
        self.mode = mode
        self.decoder = decoder
        self.parent_id = ""  # known once the follow-up is built


class MessagePromise(Promise[R]):
    """The promise of one sent message: its outcome comes from the backend.

    ``sent`` resolves to the id that stands for the message once it is stored; for a
    message of a bulk send (``index`` given) it is shared by the batch and resolves to the
    list of their ids.
    """

    _through: _PassThrough | None = None
    #: The headers the message was sent with when this App traces (its creation context,
    #: which the spans of its follow-ups link to); None otherwise.
    _created: Mapping[str, str] | None = None

    def __init__(
        self,
        app: Host,
        id: str,
        task: TaskLike[R] | None,
        sent: asyncio.Future[str] | asyncio.Future[list[str]] | None = None,
        kept: bool = True,
        index: int | None = None,
    ) -> None:
        self._app = app
        self._id = id
        self._task = task
        self._sent = sent
        self._kept = kept
        self._index = index

    def _stored_id(self, answer: str | list[str]) -> str:
        return answer if isinstance(answer, str) else answer[self._index or 0]

    def __repr__(self) -> str:
        name = self._task.name if self._task else "?"
        return f"<Promise {name} {self._id} {self.status}>"

    @property
    def id(self) -> str:
        """The message id (for a keyed send, the first message's id once the send is done)."""
        if self._sent is not None and self._sent.done() and not self._sent.exception():
            return self._stored_id(self._sent.result())
        return self._id

    @property
    def app(self) -> Host:
        assert self._app is not None
        return self._app

    @property
    def kept(self) -> bool:
        """Whether the message keeps an outcome (False when it was sent with ``fire``)."""
        return self._kept

    async def sent(self) -> str:
        """Wait until the message is stored durably; its id. Raises if the send failed."""
        return await self.app.call(self._confirm())

    async def _confirm(self) -> str:
        if self._sent is not None:
            self._id = self._stored_id(await asyncio.shield(self._sent))
        return self._id

    async def _resolve(self) -> R:
        if self._outcome is not None:
            return replay(self._outcome)  # type: ignore[no-any-return]
        mid = await self._confirm()
        if not self._kept:
            raise ResultNotKept(f"message {mid} was sent with fire(): no outcome is kept")
        result = await self.app.watcher.get(mid)
        return self._settle(result, await self._decoder(result))

    async def _decoder(self, result: Result) -> TaskLike[Any] | None:
        """The task whose return type ``result``'s value decodes as (None: plain JSON)."""
        through = self._through
        if through is None or result.state != "succeeded":
            return self._task
        if through.mode == "catch":
            found = await (await self.app.open()).results([through.parent_id])
            parent = found.get(through.parent_id)
            if parent is None or parent.state != "succeeded":
                return self._task  # the parent rejected: the value is the handler's
        return through.decoder

    def _settle(self, result: Result, decoder: TaskLike[Any] | None = None) -> R:
        known = resolve_result(result, decoder.codec if decoder is not None else None)
        self._remember(*known)
        return replay(known)  # type: ignore[no-any-return]

    def _follow(self, task: TaskLike[Any], mode: Mode) -> Promise[Any]:
        app = self.app
        through = _PassThrough(mode, self._task) if mode != "then" else None

        async def follow() -> list[Message]:
            parent = await self._confirm()
            if through is not None:
                through.parent_id = parent
            return [task.follow_up(parent, mode)]

        promise = app.send_later(follow(), task, (self,))
        promise._through = through
        return promise

    _progress: Progress | None = None
    _progress_callbacks: list[Callable[[Progress], Any]] | None = None

    @property
    def progress(self) -> Progress | None:
        """The latest progress the task reported (``pigeon.current().progress``), as seen
        here: None until a report arrives. Reading it starts following the message's
        progress (a few times a second, one backend call for all followed promises) until
        the outcome is stored."""
        if self._progress_callbacks is None:
            self._progress_callbacks = []
            self._start_following()
        return self._progress

    def on_progress(self, callback: Callable[[Progress], Any]) -> MessagePromise[R]:
        """Call ``callback(progress)`` (on the App's event loop) with each new progress
        report of this message until its outcome is stored; returns this promise.
        An async callback is awaited; an exception in one is logged."""
        if self._progress_callbacks is None:
            self._progress_callbacks = [callback]
            self._start_following()
        else:
            self._progress_callbacks.append(callback)
        return self

    def _start_following(self) -> None:
        async def follow() -> None:
            mid = await self._confirm()
            await self.app.progress_watcher.follow(mid, self)

        self.app.start(follow())

    async def _on_progress(self, progress: Progress) -> None:
        self._progress = progress
        for callback in list(self._progress_callbacks or ()):
            try:
                answer = callback(progress)
                if inspect.isawaitable(answer):
                    await answer
            except Exception:
                log.exception("progress callback %r of %s failed", callback, self._id)

    def cancel(self) -> Promise[bool]:
        async def cancel() -> bool:
            mid = await self._confirm()

            async def op(b: Backend) -> bool:
                if await b.cancel([mid]):
                    return True
                info = await b.inspect(mid)  # a running message was marked for its worker
                return info is not None and info.state == "leased"

            return await self.app.backend_call(op)

        return LocalPromise(self.app, self.app.start(cancel()))


class LocalPromise(Promise[R]):
    """A promise whose outcome is computed in this process (callbacks, combinators)."""

    def __init__(
        self, app: Host | None, future: asyncio.Future[Any] | concurrent.futures.Future[Any]
    ) -> None:
        self._app = app
        self._future = future

    async def _resolve(self) -> R:
        if self._outcome is not None:
            return replay(self._outcome)  # type: ignore[no-any-return]
        try:
            value = await asyncio.shield(asyncio.wrap_future(self._future))
        except asyncio.CancelledError:
            if self._future.cancelled():
                exc = Cancelled("the local computation of this promise was cancelled")
                self._remember(False, exc)
                raise exc from None
            raise
        except Exception as exc:
            self._remember(False, exc)
            raise
        self._remember(True, value)
        return value  # type: ignore[no-any-return]

    def _peek(self) -> Known | None:
        if self._outcome is None and (known := finished(self._future)) is not None:
            self._remember(*known)
        return self._outcome


class CombinedPromise(Promise[Any]):
    """``Promise.all/any/race/all_settled`` of its inputs; durable when followed by a task."""

    def __init__(self, inputs: list[Any], mode: JoinMode) -> None:
        self._inputs = inputs
        self._mode = mode
        self._app = next((p._app for p in inputs if isinstance(p, Promise) and p._app), None)
        self._started: asyncio.Future[Any] | None = None

    async def _resolve(self) -> Any:
        if self._outcome is not None:
            return replay(self._outcome)
        if self._started is None:
            self._started = asyncio.ensure_future(COMBINE[self._mode](_futures(self._inputs)))
        assert isinstance(self._started, asyncio.Future)
        try:
            value = await asyncio.shield(self._started)
        except Exception as exc:
            self._remember(False, exc)
            raise
        self._remember(True, value)
        return value

    def _peek(self) -> Known | None:
        started = self._started
        if self._outcome is None and started is not None and (known := finished(started)):
            self._remember(*known)
        return self._outcome

    def _follow(self, task: TaskLike[Any], mode: Mode) -> Promise[Any]:
        members: list[MessagePromise[Any]] = []
        for index, p in enumerate(self._inputs):
            if not isinstance(p, MessagePromise) or not p._kept:
                what = "a plain value" if not isinstance(p, Promise) else type(p).__name__
                raise PigeonError(
                    f"Promise.{self._mode}(...).{mode}({task.name}): a durable join needs the"
                    f" promises of sent messages, but input {index} is {what}. Use a local"
                    " callback instead, or send that work as a task too"
                )
            members.append(p)
        app = members[0].app if members else task.app
        join_mode = self._mode
        # A join's value is a combination of its members' values: plain JSON.
        through = _PassThrough(mode, None) if mode != "then" else None

        async def follow() -> list[Message]:
            ids = [await m._confirm() for m in members]
            join = task.follow_up(None, None)
            join = msgspec.structs.replace(
                join, id=new_id(), task=JOIN_TASK, join=JoinSpec(ids, join_mode)
            )
            if through is not None:
                through.parent_id = join.id
            return [join, task.follow_up(join.id, mode)]

        promise = app.send_later(follow(), task, members)
        promise._through = through
        return promise


def _is_task(handler: Any) -> bool:
    return isinstance(handler, TaskLike)


async def _adopt(value: Any) -> Any:
    """A handler's return value: awaited if awaitable (a returned Promise is adopted)."""
    while isinstance(value, Promise) or inspect.isawaitable(value):
        if isinstance(value, LocalPromise) and value._future is asyncio.current_task():
            # JavaScript: "chaining cycle detected". Adopting itself would wait forever.
            raise TypeError("a handler returned the very promise it settles (a chaining cycle)")
        value = await value
    return value


# combinators ---------------------------------------------------------------------------


def _futures(inputs: list[Any]) -> list[asyncio.Future[Any]]:
    loop = asyncio.get_running_loop()
    out: list[asyncio.Future[Any]] = []
    for item in inputs:
        known = item._peek() if isinstance(item, Promise) else None
        if known is not None:
            f: asyncio.Future[Any] = loop.create_future()
            fulfilled, value = known
            if fulfilled:
                f.set_result(value)
            else:
                f.set_exception(value)
        elif isinstance(item, Promise):
            f = asyncio.ensure_future(item._resolve())
        else:
            f = loop.create_future()
            f.set_result(item)
        out.append(f)
    return out
