"""``App``: configuration, the task registry, and the backend's lifecycle.

An App lives on one asyncio event loop (its "home"): the first loop that uses it, or, when
it is first used from sync code, a loop on a background thread of its own. Every backend
call runs on the home loop; ``await`` from another loop and blocking calls from sync code
are bridged to it, so one App serves async code, sync code and worker threads alike.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta, tzinfo
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, Unpack, overload

from pigeon.backends import DEFAULT_URL, Backend, from_url, redact
from pigeon.backends.base import SyncTransactionalBackend, TransactionalBackend
from pigeon.batching import Batcher
from pigeon.errors import ConfigError, PigeonError, Timeout
from pigeon.events import Publisher, follow
from pigeon.events import sent as sent_event
from pigeon.limits import TaskLimits
from pigeon.message import Event, Message
from pigeon.promise import MessagePromise, ProgressWatcher, Promise, ResultWatcher
from pigeon.signing import Signer
from pigeon.task import Task, TaskOptions

if TYPE_CHECKING:
    from pigeon.scheduler import PeriodicDecorator, PeriodicOptions, Schedule

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

log = logging.getLogger("pigeon")

DEFAULT_MAX_PAYLOAD = 1 << 20
#: The most messages one ``enqueue`` stores: the sends made meanwhile (or a bulk send) are
#: stored in chunks of this many.
SEND_CHUNK = 10_000


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
    ) -> None:
        self.url = url or os.environ.get("PIGEON_URL") or DEFAULT_URL
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
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._portal: threading.Thread | None = None
        self._opened = False
        self._open_lock: asyncio.Lock | None = None
        self._sender: Batcher[Message, str] | None = None
        self._watcher: ResultWatcher | None = None
        self._progress: ProgressWatcher | None = None
        self._publisher: Publisher | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self._sending: set[asyncio.Future[Any]] = set()
        # The App.transaction block the current context is in, if any.
        self._transaction: contextvars.ContextVar[_Transaction | None] = contextvars.ContextVar(
            f"pigeon.transaction.{id(self)}", default=None
        )

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
        **options: Unpack[PeriodicOptions],
    ) -> PeriodicDecorator:
        """Register a task that the workers send on a schedule::

            @app.periodic(cron="*/5 * * * *", tz="Europe/Paris")
            @app.periodic(every=timedelta(minutes=1))

        Each tick is sent exactly once by whichever worker leads (see ``pigeon.scheduler``);
        ``catch_up`` (30 s by default) is how late a missed tick may still be sent. Other
        options are the task's. The function is called with no arguments. Raises
        ConfigError for a schedule that cannot work.
        """
        from pigeon.scheduler import PeriodicDecorator, Timing

        timing = Timing(cron=cron, every=every, tz=tz, catch_up=catch_up)
        return PeriodicDecorator(self, timing, options)

    def _register(self, fn: Callable[..., Any], options: dict[str, Any]) -> Task[Any, Any]:
        name = options.pop("name", None) or f"{fn.__module__}.{fn.__qualname__}"
        if not isinstance(name, str) or "\x00" in name:
            # every backend must be able to store it: PostgreSQL text cannot hold NUL
            raise ConfigError(f"task name {name!r}: must be a string without NUL characters")
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

    # the home loop -------------------------------------------------------------------------

    def _home_for_async(self) -> asyncio.AbstractEventLoop:
        running = asyncio.get_running_loop()
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._set_home(running)
            assert self._loop is not None
            return self._loop

    def _home_for_sync(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._portal = threading.Thread(target=serve, name="pigeon-app", daemon=True)
                self._portal.start()
                ready.wait()
                self._set_home(loop)
            return self._loop  # type: ignore[return-value]

    def _set_home(self, loop: asyncio.AbstractEventLoop) -> None:
        # A new home loop: everything bound to the old loop starts afresh (the backend's data
        # is not lost; it reopens its connections on the new loop).
        self._loop = loop
        self._opened = False
        self._open_lock = None
        self._sender = None
        self._watcher = None
        self._progress = None
        self._publisher = None
        self._background = set()
        self._sending = set()

    def _async_here(self) -> bool:
        """Whether this thread runs the home loop (adopting the running loop as home when
        the App has none, or its old home was closed)."""
        running = _running_loop()
        if running is None:
            return False
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._set_home(running)
            return self._loop is running

    def _on_home(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    async def call(self, coro: Awaitable[T]) -> T:
        """Await ``coro`` on the App's home loop, from whatever loop we are on."""
        home = self._home_for_async()
        if home is asyncio.get_running_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_wrap(coro), home))

    def call_sync(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coro`` on the home loop and block for it (sync code only).

        Raises pigeon.Timeout after ``timeout`` seconds, and PigeonError when called on the
        home loop itself (that would block the loop it waits for: use ``await``).
        """
        if self._on_home():
            _close(coro)
            raise PigeonError(
                "a blocking call (like promise.result()) was made on the event loop that"
                " pigeon runs on; it would wait forever. Use `await promise` instead"
            )
        home = self._home_for_sync()
        future = asyncio.run_coroutine_threadsafe(_wrap(coro), home)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Timeout(f"no outcome within {timeout} s; the work goes on") from None

    def start(self, coro: Awaitable[T]) -> asyncio.Future[T] | concurrent.futures.Future[T]:
        """Run ``coro`` in the background on the home loop; the App owns it until close."""
        if self._async_here():
            task = asyncio.ensure_future(coro)
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return task
        home = self._home_for_sync()
        return asyncio.run_coroutine_threadsafe(_wrap(coro), home)

    # the backend ----------------------------------------------------------------------------

    async def open(self) -> Backend:
        """Open the backend (on first use; safe to call many times). Returns it."""
        if self._opened:
            return self.backend
        self._home_for_async()
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

    # sending --------------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[Message]) -> list[str]:
        """Store messages durably (one backend round trip); the ids that stand for them."""
        backend = await self.open()
        if self.signer is not None:
            messages = [self.signer.sign(m) for m in messages]
        ids = await backend.enqueue(messages)
        if self.publish_events:
            if self._publisher is None:
                self._publisher = Publisher(backend)
            for message, mid in zip(messages, ids, strict=True):
                if mid == message.id:  # not a keyed duplicate
                    self._publisher.emit(sent_event(message))
        return ids

    def send_message(self, message: Message, task: Task[Any, Any] | None) -> MessagePromise[Any]:
        """Send one message; returns its promise at once.

        On the home loop the message joins the current batch (one ``enqueue`` for all the
        sends made meanwhile) and is durable once ``await promise.sent()`` returns. From
        sync code the send blocks until the message is stored.
        """
        kept = message.result_ttl > 0
        transaction = self._transaction.get()
        if transaction is not None:
            return transaction.add(message, task)
        if self._async_here():
            if self._sender is None:
                self._sender = Batcher(self.enqueue, SEND_CHUNK)
            future = self._sender.submit(message)
            future.add_done_callback(_retrieve)
            return MessagePromise(self, message.id, task, future, kept)
        ids = self.call_sync(self.enqueue([message]))
        return MessagePromise(self, ids[0], task, None, kept)

    def send_messages(
        self, messages: list[Message], task: Task[Any, T] | None, *, promises: bool = True
    ) -> list[Promise[T]]:
        """Send many messages at once (``Task.send_many``); their promises, in order (none
        when ``promises`` is False).

        On the home loop they join the sends in flight as one request with one future for
        all of them (stored in chunks of ``SEND_CHUNK``, durable once ``app.flush()`` returns);
        from sync code this blocks until they are stored.
        """
        transaction = self._transaction.get()
        if transaction is not None:
            return transaction.add_many(messages, task, promises)
        if self._async_here():
            if self._sender is None:
                self._sender = Batcher(self.enqueue, SEND_CHUNK)
            future = self._sender.submit_many(messages)
            future.add_done_callback(_retrieve)
            if not promises:
                return []
            return [
                MessagePromise(self, m.id, task, future, m.result_ttl > 0, i)
                for i, m in enumerate(messages)
            ]
        ids: list[str] = []
        for i in range(0, len(messages), SEND_CHUNK):
            ids.extend(self.call_sync(self.enqueue(messages[i : i + SEND_CHUNK])))
        if not promises:
            return []
        return [
            MessagePromise(self, mid, task, None, m.result_ttl > 0)
            for mid, m in zip(ids, messages, strict=True)
        ]

    def transaction(self, connection: Any) -> _Transaction:
        """Send through the application's own database transaction (transactional enqueue).

        Inside ``async with app.transaction(conn):``, every ``task.send(...)`` and
        ``task.fire(...)`` of this App is written through ``conn``, the application's own
        connection (asyncpg, for ``postgresql://``), when the block exits, inside the
        transaction ``conn`` is in: the messages become visible to workers only if that
        transaction commits, and vanish if it rolls back (asyncpg for ``postgresql://``; for
        ``sqlite://`` a ``sqlite3`` connection to the same file, and the sync form
        ``with app.transaction(conn):`` works too)::

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
        return _Transaction(self, connection)

    def send_later(
        self, make: Coroutine[Any, Any, list[Message]], task: Task[Any, Any]
    ) -> MessagePromise[Any]:
        """Send the messages ``make`` builds (follow-ups that need an id first); the promise
        is the last message's."""

        async def run() -> str:
            messages = await make
            ids = await self.enqueue(messages)
            return ids[-1]

        if self._async_here():
            future = self.start(run())
            assert isinstance(future, asyncio.Future)
            future.add_done_callback(_retrieve)
            self._sending.add(future)
            future.add_done_callback(self._sending.discard)
            return MessagePromise(self, "", task, future)
        mid = self.call_sync(run())
        return MessagePromise(self, mid, task)

    async def flush(self) -> None:
        """Wait until every send made so far on this App is stored (async code)."""
        if not self._sending and (self._sender is None or self._sender.idle) and self._on_home():
            return  # nothing in flight: the common case after a task that sent nothing

        async def drain() -> None:
            while True:
                pending = [t for t in self._sending if not t.done()]
                if self._sender is not None:
                    await self._sender.drain()
                if not pending:
                    break
                await asyncio.wait(pending)

        await self.call(drain())

    async def close(self) -> None:
        """Flush pending sends, stop waiting, and close the backend."""

        async def shut() -> None:
            if self._sender is not None:
                await self._sender.drain()
            if self._publisher is not None:
                await self._publisher.drain()
            if self._progress is not None:
                await self._progress.close()
            if self._watcher is not None:
                await self._watcher.close()
            for task in list(self._background):
                task.cancel()
            if self._opened:
                await self.backend.close()
                self._opened = False

        if self._loop is None or self._loop.is_closed():
            return
        await self.call(shut())

    def close_sync(self) -> None:
        """``close`` for sync code; also stops the App's background thread, if it has one."""
        if self._loop is None or self._loop.is_closed():
            return
        self.call_sync(self.close())
        if self._portal is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._portal.join(5)
            self._portal = None
            self._loop.close()  # a later use starts a fresh home loop

    async def __aenter__(self) -> App:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_sync()

    def promise(self, id: str, task: Task[Any, T] | None = None) -> Promise[T]:
        """The promise of a message sent earlier (by id), e.g. from another process."""
        return MessagePromise(self, id, task)


class _Transaction:
    """``App.transaction``: collects the block's sends, writes them through the connection."""

    def __init__(self, app: App, connection: Any) -> None:
        self.app = app
        self.connection = connection
        self.messages: list[Message] = []
        # (position in messages, future): the async form's sends; a bulk send's future gets
        # the list of its ids, from its position on
        self.futures: list[tuple[int, asyncio.Future[str]]] = []
        self.bulk: list[tuple[int, asyncio.Future[list[str]]]] = []
        # (position in messages, promise): the sync form's sends, given their ids at exit
        self.promises: list[tuple[int, MessagePromise[Any]]] = []
        self._backend: TransactionalBackend | None = None
        self._sync_backend: SyncTransactionalBackend
        self._token: contextvars.Token[_Transaction | None] | None = None

    async def __aenter__(self) -> _Transaction:
        backend = await self.app.call(self.app.open())  # the schema exists, up to date
        if not isinstance(backend, TransactionalBackend):
            raise ConfigError(
                f"transactional enqueue needs a backend that writes through the application's"
                f" own database connection (postgresql://, sqlite://); this App uses"
                f" {redact(self.app.url)}"
            )
        self._backend = backend
        self._token = self.app._transaction.set(self)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        assert self._token is not None
        assert self._backend is not None
        self.app._transaction.reset(self._token)
        if exc_type is not None:
            self._fail(PigeonError("not sent: the App.transaction block raised"))
            return
        if not self.messages:
            return
        messages = self.messages
        if self.app.signer is not None:
            messages = [self.app.signer.sign(m) for m in messages]
        try:
            ids = await self._backend.enqueue_in(self.connection, messages)
        except BaseException as exc:
            self._fail(exc)
            raise
        for at, future in self.futures:
            future.set_result(ids[at])
        for at, batch in self.bulk:
            batch.set_result(ids[at:])  # a bulk send's promises pick their own by index

    def __enter__(self) -> _Transaction:
        """The sync form, for a ``sqlite3`` connection: ``with app.transaction(conn):``."""
        backend = self.app.call_sync(self.app.open())
        if not isinstance(backend, SyncTransactionalBackend):
            raise ConfigError(
                "`with app.transaction(conn)` needs a backend that writes through a sync"
                f" connection (sqlite://); this App uses {redact(self.app.url)}"
                " (for postgresql://, use `async with app.transaction(conn)`)"
            )
        self._sync_backend = backend
        self._token = self.app._transaction.set(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        assert self._token is not None
        self.app._transaction.reset(self._token)
        if exc_type is not None or not self.messages:
            return  # nothing written: the promises made inside never become sent
        messages = self.messages
        if self.app.signer is not None:
            messages = [self.app.signer.sign(m) for m in messages]
        ids = self._sync_backend.enqueue_in_sync(self.connection, messages)
        for at, promise in self.promises:
            promise._id = ids[at]

    def add(self, message: Message, task: Task[Any, Any] | None) -> MessagePromise[Any]:
        kept = message.result_ttl > 0
        at = len(self.messages)
        self.messages.append(message)
        if _running_loop() is None:  # the sync form: ids are fixed when the block exits
            promise: MessagePromise[Any] = MessagePromise(self.app, message.id, task, None, kept)
            self.promises.append((at, promise))
            return promise
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.futures.append((at, future))
        return MessagePromise(self.app, message.id, task, future, kept)

    def add_many(
        self, messages: list[Message], task: Task[Any, T] | None, promises: bool
    ) -> list[Promise[T]]:
        """A bulk send inside the block: one future for all of its messages."""
        at = len(self.messages)
        self.messages.extend(messages)
        if _running_loop() is None:  # the sync form: ids are fixed when the block exits
            if not promises:
                return []
            made: list[MessagePromise[T]] = [
                MessagePromise(self.app, m.id, task, None, m.result_ttl > 0) for m in messages
            ]
            self.promises.extend(enumerate(made, at))
            return list(made)
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self.bulk.append((at, future))
        if not promises:
            return []
        return [
            MessagePromise(self.app, m.id, task, future, m.result_ttl > 0, i)
            for i, m in enumerate(messages)
        ]

    def _fail(self, exc: BaseException) -> None:
        futures: list[asyncio.Future[Any]] = [f for _, f in self.futures]
        futures.extend(f for _, f in self.bulk)
        for future in futures:
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved: only the promises' awaiters need to see it
            else:
                future.cancel()


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


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


def _close(coro: Awaitable[Any]) -> None:
    if asyncio.iscoroutine(coro):
        coro.close()


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A send whose promise is never awaited must still not fail unnoticed.
    if not future.cancelled() and future.exception() is not None:
        log.error("sending failed: %s", future.exception())
