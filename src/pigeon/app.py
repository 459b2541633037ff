"""``App``: configuration, the task registry, and the backend's lifecycle.

An App lives on one asyncio event loop, its home (``pigeon.home``); its sends go through
``pigeon.sending``, and its promises wait through ``pigeon.watchers``. This module ties them
together and is what users meet: ``App(url)``, ``@app.task``, ``@app.periodic``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta, tzinfo
from typing import Any, ParamSpec, TypeVar, Unpack, overload

from pigeon.backends import DEFAULT_URL, Backend, from_url, redact
from pigeon.errors import ConfigError
from pigeon.events import follow
from pigeon.home import Home
from pigeon.limits import TaskLimits
from pigeon.message import Event, Message
from pigeon.promise import MessagePromise, Promise, TaskLike
from pigeon.scheduler import Missed, PeriodicOptions, Schedule, Timing, check_periodic
from pigeon.sending import SEND_CHUNK, Sender, Transaction
from pigeon.signing import Signer
from pigeon.task import Task, TaskOptions, storable
from pigeon.tracing import TraceParent, Tracing, enabled
from pigeon.watchers import ProgressWatcher, ResultWatcher

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

DEFAULT_MAX_PAYLOAD = 1 << 20

#: ``App(around_sync_run=...)``: called in the worker's thread with a sync task's call (no
#: arguments), it returns what the call returns (or raises what it raises).
AroundSyncRun = Callable[[Callable[[], Any]], Any]
#: ``App(around_async_run=...)``: awaited on the worker's loop with an async task's call (no
#: arguments, returns the coroutine), it returns what the coroutine returns.
AroundAsyncRun = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]

__all__ = ["DEFAULT_MAX_PAYLOAD", "SEND_CHUNK", "App", "AroundAsyncRun", "AroundSyncRun"]


class App:
    """A pigeon application: where messages go (``url``) and the tasks that handle them.

    ``url`` defaults to the ``PIGEON_URL`` environment variable, else
    ``sqlite:///pigeon.db`` (a file in the current directory). ``result_ttl`` is the default
    number of seconds an outcome is kept; ``max_payload`` the largest encoded arguments a
    send accepts (and a worker runs), in bytes. ``secret`` (default: ``PIGEON_SECRET``,
    comma-separated for rotation) signs every message with HMAC-SHA256; a worker with a
    secret dead-letters unsigned or badly signed messages without running them.
    ``events`` (default: ``PIGEON_EVENTS``, off) publishes what happens to messages for
    ``app.events()`` and ``pigeon events`` (see ``pigeon.events``; it costs one more
    backend call per batch of sends or outcomes).
    ``tracing`` (default: ``PIGEON_TRACING``, off) makes OpenTelemetry spans of sends and
    of the workers' attempts, the trace context carried in each message's headers (see
    ``pigeon.tracing``; needs ``pigeon[otel]``); ``trace_parent`` says whether an attempt's
    span is linked to its message's creation context (``"link"``) or its child (``"child"``).
    ``around_sync_run`` and ``around_async_run`` (default None: nothing) surround each run
    of a task by a worker of this App, for what a framework does around a unit of work: the
    first is called in the worker's thread with a sync task's call (``around(call)`` must
    call ``call()`` and return its result), the second awaited on the worker's loop with an
    async task's (``await around(call)`` must return ``await call()``). The Django
    integration recycles Django's database connections there, as Django does around a
    request.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        result_ttl: float = 86400.0,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        queue: str = "default",
        secret: str | Sequence[str] | None = None,
        events: bool | None = None,
        tracing: bool | None = None,
        trace_parent: TraceParent = "link",
        around_sync_run: AroundSyncRun | None = None,
        around_async_run: AroundAsyncRun | None = None,
    ) -> None:
        self.url = url or os.environ.get("PIGEON_URL") or DEFAULT_URL
        self.around_sync_run = around_sync_run
        self.around_async_run = around_async_run
        if events is None:
            events = os.environ.get("PIGEON_EVENTS", "").lower() in ("1", "true", "yes", "on")
        self.publish_events = events
        if result_ttl < 0:
            raise ConfigError(f"result_ttl must be >= 0 seconds, not {result_ttl}")
        if max_payload <= 0:
            raise ConfigError(f"max_payload must be > 0 bytes, not {max_payload}")
        self.backend: Backend = from_url(self.url)
        self.result_ttl = result_ttl
        self.max_payload = max_payload
        self.queue = queue
        if secret is None:
            self.signer = Signer.from_env()
        else:
            self.signer = Signer([secret] if isinstance(secret, str) else secret)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, Schedule] = {}  # periodic tasks, by task name
        self.tracing = Tracing(trace_parent) if enabled(tracing) else None
        self._home = Home(self._moved)
        self._sender = Sender(
            self,
            self._home,
            self.open,
            signer=self.signer,
            publish_events=events,
            url=self.url,
            tracer=self.tracing,
        )
        self._opened = False
        self._open_lock: asyncio.Lock | None = None
        self._watcher: ResultWatcher | None = None
        self._progress: ProgressWatcher | None = None

    def __repr__(self) -> str:
        return f"<pigeon.App {redact(self.url)} tasks={len(self.tasks)}>"

    # tasks -------------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int = 0,
        timeout: float | None = None,
        lease: float = 30.0,
        priority: int = 0,
        result_ttl: float | None = None,
        max_deliveries: int = 3,
        retry_backoff: float = 1.0,
        retry_backoff_max: float = 300.0,
        rate: str | None = None,
        burst: int = 1,
        rate_key: Callable[..., Any] | None = None,
        limit: int | None = None,
        limit_key: Callable[..., Any] | None = None,
    ) -> _TaskDecorator: ...
    def task(  # type: ignore[misc]
        self, fn: Callable[..., Any] | None = None, /, **options: Any
    ) -> Any:
        """Register a function (async or sync) as a task: ``@app.task`` or ``@app.task(...)``.

        Options are those of ``TaskOptions``; the name defaults to ``module.qualname``.
        Limits that hold across every worker (see ``pigeon.limits.TaskLimits`` and the
        README's "Rate and concurrency limits"): ``rate="100/s"`` (with ``burst`` starts back
        to back, and ``rate_key`` for a bucket per key), ``limit=5`` running at once (with
        ``limit_key`` for a limit per key).
        """
        if fn is None:
            return _TaskDecorator(self, options)
        return self._register(fn, options)

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        tz: str | tzinfo | None = None,
        catch_up: timedelta | float | None = None,
        missed: Missed = "latest",
        **options: Unpack[PeriodicOptions],
    ) -> _PeriodicDecorator:
        """Register a task that the workers send on a schedule::

            @app.periodic(cron="*/5 * * * *", tz="Europe/Paris")
            @app.periodic(every=timedelta(minutes=1))

        Each tick is sent exactly once by whichever worker leads (see ``pigeon.scheduler``),
        from when a worker first sees the schedule on; ``catch_up`` (30 s by default) is how
        late a missed tick may still be sent, and ``missed`` which of the ticks missed while
        no worker ran are: ``"latest"`` (the default) only the latest of them, ``"all"``
        every one within ``catch_up``. Other options are the task's. The function is called
        with no arguments. Raises ConfigError for a schedule that cannot work.
        """
        timing = Timing(cron=cron, every=every, tz=tz, catch_up=catch_up, missed=missed)
        return _PeriodicDecorator(self, timing, options)

    def _register(self, fn: Callable[..., Any], options: dict[str, Any]) -> Task[Any, Any]:
        name = options.pop("name", None) or f"{fn.__module__}.{fn.__qualname__}"
        if not storable(name):
            raise ConfigError(
                f"task name {name!r}: must be a string without NUL characters or lone"
                " surrogates, which a backend cannot store; pass name=..."
            )
        limits = TaskLimits.from_options(name, options)
        if options.get("queue") is None:
            options["queue"] = self.queue
        if options.get("result_ttl") is None:
            options["result_ttl"] = self.result_ttl
        try:
            opts = TaskOptions(**options)
        except TypeError as exc:
            raise ConfigError(f"task {name!r}: {exc}") from None
        if name in self.tasks:
            raise ConfigError(f"a task named {name!r} is already registered; pass name=...")
        task: Task[Any, Any] = Task(self, fn, name, opts, limits)
        self.tasks[name] = task
        return task

    # the home loop (pigeon.home) ----------------------------------------------------------

    def _moved(self) -> None:
        # A new home loop: everything bound to the old loop starts afresh (the backend's data
        # is not lost; it reopens its connections on the new loop).
        self._opened = False
        self._open_lock = None
        self._watcher = None
        self._progress = None
        self._sender.reset()

    async def call(self, coro: Awaitable[T]) -> T:
        """Await ``coro`` on the App's home loop, from whatever loop we are on."""
        return await self._home.call(coro)

    def call_sync(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coro`` on the home loop and block for it (sync code only).

        Raises pigeon.Timeout after ``timeout`` seconds, and PigeonError when called on the
        home loop itself (that would block the loop it waits for: use ``await``).
        """
        return self._home.call_sync(coro, timeout)

    def start(self, coro: Awaitable[T]) -> asyncio.Future[T] | concurrent.futures.Future[T]:
        """Run ``coro`` in the background on the home loop; the App owns it until close."""
        return self._home.start(coro)

    # the backend ----------------------------------------------------------------------------

    async def open(self) -> Backend:
        """Open the backend (on first use; safe to call many times). Returns it."""
        if self._opened:
            return self.backend
        self._home.for_async()
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self._opened:
                await self.backend.open()
                self._opened = True
        return self.backend

    async def backend_call(self, op: Callable[[Backend], Awaitable[T]]) -> T:
        """Run one backend operation on the home loop (opening the backend if needed)."""

        async def run() -> T:
            return await op(await self.open())

        return await self.call(run())

    def backend_call_sync(
        self, op: Callable[[Backend], Awaitable[T]], timeout: float | None = None
    ) -> T:
        async def run() -> T:
            return await op(await self.open())

        return self.call_sync(run(), timeout)

    @property
    def progress_watcher(self) -> ProgressWatcher:
        """The one loop that follows the progress of running messages (home loop only)."""
        if self._progress is None:
            self._progress = ProgressWatcher(self.open)
        return self._progress

    async def events(self, *, wait: float = 5.0) -> AsyncIterator[Event]:
        """What happens to messages from now on, as it happens (an endless async iterator)::

            async for event in app.events():
                print(event.kind, event.task, event.id)

        Events are published by Apps and workers with ``events=True`` (``PIGEON_EVENTS=1``);
        see ``pigeon.events``. Iterate on the App's event loop.
        """
        backend = await self.open()
        async for event in follow(backend, None, wait):
            yield event

    @property
    def watcher(self) -> ResultWatcher:
        """The one loop that waits for outcomes on behalf of every promise (home loop only)."""
        if self._watcher is None:
            self._watcher = ResultWatcher(self.open)
        return self._watcher

    # sending (pigeon.sending) -------------------------------------------------------------

    async def enqueue(self, messages: Sequence[Message]) -> list[str]:
        """Store messages durably (one backend round trip); the ids that stand for them."""
        return await self._sender.enqueue(messages)

    def send_message(self, message: Message, task: TaskLike[Any] | None) -> MessagePromise[Any]:
        """Send one message; returns its promise at once.

        On the home loop the message joins the current batch (one ``enqueue`` for all the
        sends made meanwhile) and is durable once ``await promise.sent()`` returns. From
        sync code the send blocks until the message is stored.
        """
        return self._sender.send_message(message, task)

    def send_messages(
        self, messages: list[Message], task: TaskLike[T] | None, *, promises: bool = True
    ) -> list[Promise[T]]:
        """Send many messages at once (``Task.send_many``); their promises, in order (none
        when ``promises`` is False).

        On the home loop they join the sends in flight as one request with one future for
        all of them (stored in chunks of ``SEND_CHUNK``, durable once ``app.flush()`` returns);
        from sync code this blocks until they are stored.
        """
        return self._sender.send_messages(messages, task, promises=promises)

    def transaction(self, connection: Any) -> Transaction:
        """Send through the application's own database transaction (transactional enqueue).

        Inside ``async with app.transaction(conn):``, every ``task.send(...)`` and
        ``task.fire(...)`` of this App is written through ``conn``, the application's own
        connection, when the block exits, inside the transaction ``conn`` is in: the
        messages become visible to workers only if that transaction commits, and vanish if
        it rolls back. For ``postgresql://`` ``conn`` is asyncpg's or psycopg 3's (an
        ``AsyncConnection``; a sync ``Connection`` with the sync form
        ``with app.transaction(conn):``, as SQLAlchemy and Django hold); for ``sqlite://``
        a ``sqlite3`` connection to the same file (either form)::

            async with conn.transaction():
                await conn.execute("INSERT INTO orders ...")
                async with app.transaction(conn):
                    receipt = send_receipt.send(order_id)

        A promise from inside the block has its id at once; ``await promise.sent()``
        returns once the block has exited. Its outcome arrives only after the commit, so
        await it after the transaction. If the block raises, nothing is written and those
        promises reject. Follow-ups (``promise.then(task)``) are not part of the
        transaction: attach them after it commits. Run the block on the event loop the
        connection belongs to. Raises ConfigError when the App's backend cannot write
        through an application connection (``postgresql://`` and ``sqlite://`` can).
        """
        return Transaction(self._sender, connection)

    def send_later(
        self,
        make: Awaitable[list[Message]],
        task: TaskLike[Any],
        parents: Sequence[MessagePromise[Any]] = (),
    ) -> MessagePromise[Any]:
        """Send the messages ``make`` builds (follow-ups that need an id first); the promise
        is the last message's. ``parents``: the promises they run after."""
        return self._sender.send_later(make, task, parents)

    async def flush(self) -> None:
        """Wait until every send made so far on this App is stored (async code)."""
        await self._sender.flush()

    async def close(self) -> None:
        """Flush pending sends, stop waiting, and close the backend."""

        async def shut() -> None:
            await self._sender.drain()
            if self._progress is not None:
                await self._progress.close()
            if self._watcher is not None:
                await self._watcher.close()
            self._home.cancel_background()
            if self._opened:
                await self.backend.close()
                self._opened = False

        if self._home.closed:
            return
        await self.call(shut())

    def close_sync(self) -> None:
        """``close`` for sync code; also stops the App's background thread, if it has one."""
        if self._home.closed:
            return
        self.call_sync(self.close())
        self._home.stop_portal()

    async def __aenter__(self) -> App:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_sync()

    def promise(self, id: str, task: Task[Any, T] | None = None) -> MessagePromise[T]:
        """The promise of a message sent earlier (by id), e.g. from another process."""
        return MessagePromise(self, id, task)


class _TaskDecorator:
    def __init__(self, app: App, options: dict[str, Any]) -> None:
        self.app = app
        self.options = options

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Task[P, R]: ...
    def __call__(self, fn: Callable[..., Any]) -> Task[Any, Any]:
        return self.app._register(fn, dict(self.options))


class _PeriodicDecorator:
    """What ``app.periodic(...)`` returns: registers the function as a task and a schedule."""

    def __init__(self, app: App, timing: Timing, options: PeriodicOptions) -> None:
        self.app = app
        self.timing = timing
        self.options = options

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Task[P, R]: ...
    def __call__(self, fn: Callable[..., Any]) -> Task[Any, Any]:
        check_periodic(fn)
        task = self.app._register(fn, dict(self.options))
        self.app.schedules[task.name] = Schedule(task, self.timing)
        return task
