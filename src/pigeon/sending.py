"""The send path of an App: batching sends into few ``enqueue`` calls, and ``App.transaction``.

On the App's home loop, ``send`` hands the message to a ``Batcher``: every send made while
one ``enqueue`` is in flight goes in the next one, so a burst of sends costs a few round
trips. From sync code a send blocks until the message is stored. Inside an
``App.transaction`` block, sends are collected and written through the application's own
connection when the block exits (transactional enqueue).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from pigeon.backends.base import (
    Backend,
    SyncTransactionalBackend,
    TransactionalBackend,
    redact,
)
from pigeon.batching import Batcher
from pigeon.errors import ConfigError, PigeonError
from pigeon.events import Publisher
from pigeon.events import sent as sent_event
from pigeon.home import Home, running_loop
from pigeon.message import Message
from pigeon.promise import Host, MessagePromise, Promise, TaskLike
from pigeon.signing import Signer

T = TypeVar("T")

log = logging.getLogger("pigeon")

#: The most messages one ``enqueue`` stores: the sends made meanwhile (or a bulk send) are
#: stored in chunks of this many.
SEND_CHUNK = 10_000

#: Ends a send's span: with the exception that failed the send, or None once it is stored.
EndSend = Callable[[BaseException | None], None]


class SendTracer(Protocol):
    """What the send path asks of tracing (``pigeon.tracing.Tracing``): start the span of a
    send in the current context, and the messages with its context in their headers."""

    def start_send(
        self, messages: Sequence[Message], bulk: bool, parents: Sequence[Mapping[str, str]] = ()
    ) -> tuple[list[Message], EndSend]: ...


class Sender:
    """Stores an App's messages: batched on the home loop, blocking from sync code, through
    the application's connection inside ``App.transaction``.

    ``host`` is the App (the promises made here belong to it); ``open`` opens its backend.
    ``tracer``, when the App traces, makes a span of each send (None costs nothing).
    """

    def __init__(
        self,
        host: Host,
        home: Home,
        open: Callable[[], Awaitable[Backend]],
        *,
        signer: Signer | None,
        publish_events: bool,
        url: str,
        tracer: SendTracer | None = None,
    ) -> None:
        self.host = host
        self.tracer = tracer
        self.home = home
        self.open = open
        self.signer = signer
        self.publish_events = publish_events
        self.url = url
        self._batcher: Batcher[Message, str] | None = None
        self._publisher: Publisher | None = None
        self._sending: set[asyncio.Future[Any]] = set()
        # The App.transaction block the current context is in, if any.
        self.transaction: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
            f"pigeon.transaction.{id(self)}", default=None
        )

    def reset(self) -> None:
        """Forget what was bound to the old home loop (a new home: see ``pigeon.home``)."""
        self._batcher = None
        self._publisher = None
        self._sending = set()

    def sign(self, messages: Sequence[Message]) -> Sequence[Message]:
        """The messages as they are stored: signed when the App has a secret."""
        if self.signer is None:
            return messages
        signer = self.signer
        return [signer.sign(m) for m in messages]

    async def enqueue(self, messages: Sequence[Message]) -> list[str]:
        """Store messages durably (one backend round trip); the ids that stand for them."""
        backend = await self.open()
        messages = self.sign(messages)
        at = time.time()  # before the enqueue: a worker may start them before it returns
        ids = await backend.enqueue(messages)
        if self.publish_events:
            if self._publisher is None:
                self._publisher = Publisher(backend)
            for message, mid in zip(messages, ids, strict=True):
                if mid == message.id:  # not a keyed duplicate
                    self._publisher.emit(sent_event(message, at))
        return ids

    def _batched(self) -> Batcher[Message, str]:
        if self._batcher is None:
            self._batcher = Batcher(self.enqueue, SEND_CHUNK)
        return self._batcher

    def send_message(self, message: Message, task: TaskLike[Any] | None) -> MessagePromise[Any]:
        """Send one message; its promise at once (see ``App.send_message``)."""
        if self.tracer is None:
            return self._send_message(message, task, None)
        [message], end = self.tracer.start_send([message], False)
        promise = self._send_message(message, task, end)
        promise._created = message.headers  # its follow-ups link to this send
        return promise

    def _send_message(
        self, message: Message, task: TaskLike[Any] | None, end: EndSend | None
    ) -> MessagePromise[Any]:
        kept = message.result_ttl > 0
        transaction = self.transaction.get()
        if transaction is not None:
            _end(end, None)  # the span is the hand-over: the block's exit writes it
            return transaction.add(message, task)
        if self.home.here():
            future = self._batched().submit(message)
            future.add_done_callback(_retrieve)
            if end is not None:
                future.add_done_callback(_ender(end))
            return MessagePromise(self.host, message.id, task, future, kept)
        try:
            ids = self.home.call_sync(self.enqueue([message]))
        except BaseException as exc:
            _end(end, exc)
            raise
        _end(end, None)
        return MessagePromise(self.host, ids[0], task, None, kept)

    def send_messages(
        self, messages: list[Message], task: TaskLike[T] | None, *, promises: bool = True
    ) -> list[Promise[T]]:
        """Send many messages at once; their promises in order (see ``App.send_messages``)."""
        if self.tracer is None or not messages:
            return self._send_messages(messages, task, promises, None)
        messages, end = self.tracer.start_send(messages, True)
        sent = self._send_messages(messages, task, promises, end)
        for p in sent:
            if isinstance(p, MessagePromise):
                p._created = messages[0].headers  # one send span: every message's context
        return sent

    def _send_messages(
        self, messages: list[Message], task: TaskLike[T] | None, promises: bool, end: EndSend | None
    ) -> list[Promise[T]]:
        transaction = self.transaction.get()
        if transaction is not None:
            _end(end, None)  # the span is the hand-over: the block's exit writes them
            return transaction.add_many(messages, task, promises)
        if self.home.here():
            future = self._batched().submit_many(messages)
            future.add_done_callback(_retrieve)
            if end is not None:
                future.add_done_callback(_ender(end))
            if not promises:
                return []
            return [
                MessagePromise(self.host, m.id, task, future, m.result_ttl > 0, i)
                for i, m in enumerate(messages)
            ]
        ids: list[str] = []
        try:
            for i in range(0, len(messages), SEND_CHUNK):
                ids.extend(self.home.call_sync(self.enqueue(messages[i : i + SEND_CHUNK])))
        except BaseException as exc:
            _end(end, exc)
            raise
        _end(end, None)
        if not promises:
            return []
        return [
            MessagePromise(self.host, mid, task, None, m.result_ttl > 0)
            for mid, m in zip(ids, messages, strict=True)
        ]

    def send_later(
        self,
        make: Awaitable[list[Message]],
        task: TaskLike[Any],
        parents: Sequence[MessagePromise[Any]] = (),
    ) -> MessagePromise[Any]:
        """Send the messages ``make`` builds (follow-ups that need an id first); the promise
        is the last message's. ``parents``: the promises they run after (their send spans
        are linked when tracing)."""
        tracer = self.tracer
        # The caller's context, which a send from sync code does not reach the home loop with
        context = contextvars.copy_context() if tracer is not None else None
        # The headers of the last message as sent, filled in before it is stored (its own
        # follow-ups read them once it is): the promise's creation context.
        created: dict[str, str] | None = {} if tracer is not None else None

        async def run() -> str:
            messages = await make
            end: EndSend | None = None
            if tracer is not None and context is not None and created is not None:
                # read now: a parent's own headers are known once it is sent (make waited)
                linked = [p._created for p in parents if p._created]
                bulk = len(messages) > 1
                messages, end = context.run(tracer.start_send, messages, bulk, linked)
                created.update(messages[-1].headers)
            try:
                ids = await self.enqueue(messages)
            except BaseException as exc:
                _end(end, exc)
                raise
            _end(end, None)
            return ids[-1]

        if self.home.here():
            future = self.home.start(run())
            assert isinstance(future, asyncio.Future)
            future.add_done_callback(_retrieve)
            self._sending.add(future)
            future.add_done_callback(self._sending.discard)
            promise: MessagePromise[Any] = MessagePromise(self.host, "", task, future)
        else:
            promise = MessagePromise(self.host, self.home.call_sync(run()), task)
        promise._created = created
        return promise

    async def flush(self) -> None:
        """Wait until every send made so far is stored (async code)."""
        idle = self._batcher is None or self._batcher.idle
        if not self._sending and idle and self.home.on_home():
            return  # nothing in flight: the common case after a task that sent nothing

        async def drain() -> None:
            while True:
                pending = [t for t in self._sending if not t.done()]
                if self._batcher is not None:
                    await self._batcher.drain()
                if not pending:
                    break
                await asyncio.wait(pending)

        await self.home.call(drain())

    async def drain(self) -> None:
        """Store what is batched and publish what is pending (on the home loop, at close)."""
        if self._batcher is not None:
            await self._batcher.drain()
        if self._publisher is not None:
            await self._publisher.drain()


class Transaction:
    """``App.transaction``: collects the block's sends, writes them through the connection."""

    def __init__(self, sender: Sender, connection: Any) -> None:
        self.sender = sender
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
        self._token: contextvars.Token[Transaction | None] | None = None

    async def __aenter__(self) -> Transaction:
        sender = self.sender
        backend = await sender.home.call(sender.open())  # the schema exists, up to date
        if not isinstance(backend, TransactionalBackend):
            raise ConfigError(
                f"transactional enqueue needs a backend that writes through the application's"
                f" own database connection (postgresql://, sqlite://); this App uses"
                f" {redact(sender.url)}"
            )
        self._backend = backend
        self._token = sender.transaction.set(self)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        assert self._token is not None
        assert self._backend is not None
        self.sender.transaction.reset(self._token)
        if exc_type is not None:
            self._fail(PigeonError("not sent: the App.transaction block raised"))
            return
        if not self.messages:
            return
        try:
            ids = await self._backend.enqueue_in(self.connection, self.sender.sign(self.messages))
        except BaseException as exc:
            self._fail(exc)
            raise
        for at, future in self.futures:
            future.set_result(ids[at])
        for at, batch in self.bulk:
            batch.set_result(ids[at:])  # a bulk send's promises pick their own by index

    def __enter__(self) -> Transaction:
        """The sync form, for a ``sqlite3`` or psycopg 3 connection: ``with
        app.transaction(conn):``."""
        sender = self.sender
        backend = sender.home.call_sync(sender.open())
        if not isinstance(backend, SyncTransactionalBackend):
            raise ConfigError(
                "`with app.transaction(conn)` needs a backend that writes through a sync"
                " connection (sqlite:// with sqlite3, postgresql:// with psycopg 3); this App"
                f" uses {redact(sender.url)}"
            )
        self._sync_backend = backend
        self._token = sender.transaction.set(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        assert self._token is not None
        self.sender.transaction.reset(self._token)
        if exc_type is not None or not self.messages:
            return  # nothing written: the promises made inside never become sent
        messages = self.sender.sign(self.messages)
        ids = self._sync_backend.enqueue_in_sync(self.connection, messages)
        for at, promise in self.promises:
            promise._id = ids[at]

    def add(self, message: Message, task: TaskLike[Any] | None) -> MessagePromise[Any]:
        host = self.sender.host
        kept = message.result_ttl > 0
        at = len(self.messages)
        self.messages.append(message)
        if running_loop() is None:  # the sync form: ids are fixed when the block exits
            promise: MessagePromise[Any] = MessagePromise(host, message.id, task, None, kept)
            self.promises.append((at, promise))
            return promise
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.futures.append((at, future))
        return MessagePromise(host, message.id, task, future, kept)

    def add_many(
        self, messages: list[Message], task: TaskLike[T] | None, promises: bool
    ) -> list[Promise[T]]:
        """A bulk send inside the block: one future for all of its messages."""
        host = self.sender.host
        at = len(self.messages)
        self.messages.extend(messages)
        if running_loop() is None:  # the sync form: ids are fixed when the block exits
            if not promises:
                return []
            made: list[MessagePromise[T]] = [
                MessagePromise(host, m.id, task, None, m.result_ttl > 0) for m in messages
            ]
            self.promises.extend(enumerate(made, at))
            return list(made)
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self.bulk.append((at, future))
        if not promises:
            return []
        return [
            MessagePromise(host, m.id, task, future, m.result_ttl > 0, i)
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


def _end(end: EndSend | None, error: BaseException | None) -> None:
    if end is not None:
        end(error)


def _ender(end: EndSend) -> Callable[[asyncio.Future[Any]], None]:
    """A done callback that ends a send's span with the send's outcome."""

    def ended(future: asyncio.Future[Any]) -> None:
        end(None if future.cancelled() else future.exception())

    return ended


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A send whose promise is never awaited must still not fail unnoticed.
    if not future.cancelled() and future.exception() is not None:
        log.error("sending failed: %s", future.exception())
