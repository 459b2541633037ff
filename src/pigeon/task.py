"""``Task[P, R]``: a registered function, its options, and how calls become messages."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

import msgspec

from pigeon.codec import Call, TaskCodec
from pigeon.errors import ConfigError, EncodeError
from pigeon.limits import TaskLimits
from pigeon.message import EMPTY_ARGS, Message, Mode, new_id, new_ids
from pigeon.promise import Host, MessagePromise, Promise, TaskLike

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class App(Host, Protocol):
    """What a task needs of the App it is registered with (``pigeon.App`` is one): the
    payload limit, and the send path its calls go through. A protocol, so that this module
    sits below ``pigeon.app`` in the import graph."""

    max_payload: int

    def send_message(self, message: Message, task: TaskLike[Any] | None) -> MessagePromise[Any]: ...
    def send_messages(
        self, messages: list[Message], task: TaskLike[T] | None, *, promises: bool = True
    ) -> list[Promise[T]]: ...


_UNSET: Any = object()


class TaskOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How a task's messages are sent and run. Every field can be overridden per call.

    - ``queue``: the queue its messages go to.
    - ``retries``: how many times a failed attempt is retried (so ``retries + 1`` attempts).
    - ``timeout``: seconds one attempt may run before it is cancelled and counted as failed.
    - ``lease``: seconds a worker holds a message before another may take it over; the
      worker extends it while the task runs, so it only matters when the worker dies.
    - ``priority``: 0-9, higher runs first within a queue.
    - ``result_ttl``: seconds the outcome is kept (``fire`` keeps none).
    - ``max_deliveries``: lost leases (worker crashes) before the message is dead-lettered.
    - ``retry_backoff`` / ``retry_backoff_max``: the first retry waits about ``retry_backoff``
      seconds, doubling each time up to ``retry_backoff_max``, with +-50% jitter.
    - ``delay`` / ``eta``: run no earlier than ``delay`` seconds from now / at ``eta``.
    - ``key``: idempotency key: a second send with the same key, while the first one's
      outcome is kept, returns the first message's promise instead of sending again.
    - ``expires``: seconds (or a datetime) after which a message not yet started is dropped.
    """

    queue: str = "default"
    retries: int = 0
    timeout: float | None = None
    lease: float = 30.0
    priority: int = 0
    result_ttl: float = 86400.0
    max_deliveries: int = 3
    retry_backoff: float = 1.0
    retry_backoff_max: float = 300.0
    delay: float = 0.0
    eta: datetime | None = None
    key: str | None = None
    expires: float | datetime | None = None

    def check(self, name: str) -> None:
        """Raise ConfigError naming the option when a value cannot work."""
        if not self.queue or not storable(self.queue):
            raise ConfigError(
                f"task {name!r}: queue must be a non-empty string without NUL or lone"
                f" surrogates, not {self.queue!r}"
            )
        if self.key is not None and not storable(self.key):
            raise ConfigError(
                f"task {name!r}: key must be a string without NUL or lone surrogates,"
                f" not {self.key!r}"
            )
        if self.retries < 0:
            raise ConfigError(f"task {name!r}: retries must be >= 0, not {self.retries}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"task {name!r}: timeout must be > 0 seconds, not {self.timeout}")
        if self.lease <= 0:
            raise ConfigError(f"task {name!r}: lease must be > 0 seconds, not {self.lease}")
        if not 0 <= self.priority <= 9:
            raise ConfigError(f"task {name!r}: priority must be 0-9, not {self.priority}")
        if self.result_ttl < 0:
            raise ConfigError(f"task {name!r}: result_ttl must be >= 0, not {self.result_ttl}")
        if self.max_deliveries < 1:
            raise ConfigError(f"task {name!r}: max_deliveries must be >= 1")
        if self.delay < 0:
            raise ConfigError(f"task {name!r}: delay must be >= 0 seconds, not {self.delay}")


def storable(text: object) -> bool:
    """Whether every backend can store ``text`` as a name: a string that encodes as UTF-8
    (no lone surrogate, which neither SQLite, PostgreSQL nor JSON can hold) and has no NUL
    (PostgreSQL text cannot hold one: it would fail the whole batch it was sent in)."""
    if not isinstance(text, str) or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _epoch(value: datetime) -> float:
    if value.tzinfo is None:
        raise ConfigError(
            f"eta/expires {value!r} has no time zone; pass an aware datetime "
            "(e.g. datetime.now(timezone.utc) + timedelta(minutes=5))"
        )
    return value.timestamp()


class Task(Generic[P, R]):
    """A function registered with an App. ``send`` runs it on a worker; calling runs it here.

    ``Task[P, R]`` keeps the function's parameters ``P`` and its (awaited) result ``R``, so
    ``send`` is checked by mypy against the signature and returns ``Promise[R]``.
    """

    def __init__(
        self,
        app: App,
        fn: Callable[..., Any],
        name: str,
        options: TaskOptions,
        limits: TaskLimits | None = None,
    ) -> None:
        options.check(name)
        self.app = app
        self.limits = limits
        self.fn = fn
        self.name = name
        self.defaults = options
        self.codec = TaskCodec(fn, name)
        self.is_async = _is_async(fn)
        self._templates: dict[tuple[TaskOptions, float | None], Message] = {}
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.defaults.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function here, in this process, as if it were not a task."""
        return self.fn(*args, **kwargs)

    def options(
        self,
        *,
        queue: str = _UNSET,
        retries: int = _UNSET,
        timeout: float | None = _UNSET,
        lease: float = _UNSET,
        priority: int = _UNSET,
        result_ttl: float = _UNSET,
        max_deliveries: int = _UNSET,
        delay: float | timedelta = _UNSET,
        eta: datetime | None = _UNSET,
        key: str | None = _UNSET,
        expires: float | timedelta | datetime | None = _UNSET,
    ) -> BoundTask[P, R]:
        """The same task with some options changed for the sends made through the result."""
        given = {
            "queue": queue,
            "retries": retries,
            "timeout": timeout,
            "lease": lease,
            "priority": priority,
            "result_ttl": result_ttl,
            "max_deliveries": max_deliveries,
            "delay": delay.total_seconds() if isinstance(delay, timedelta) else delay,
            "eta": eta,
            "key": key,
            "expires": expires.total_seconds() if isinstance(expires, timedelta) else expires,
        }
        changes = {k: v for k, v in given.items() if v is not _UNSET}
        try:
            opts = msgspec.structs.replace(self.defaults, **changes)
        except (TypeError, msgspec.ValidationError) as exc:
            raise ConfigError(f"task {self.name!r}: bad option: {exc}") from None
        opts.check(self.name)
        return BoundTask(self, opts)

    def send(self, *args: P.args, **kwargs: P.kwargs) -> MessagePromise[R]:
        """Send a message to run this task on a worker; returns its Promise at once."""
        return BoundTask(self, self.defaults).send(*args, **kwargs)

    def fire(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Send without keeping an outcome: nothing to wait for, nothing stored."""
        BoundTask(self, self.defaults).fire(*args, **kwargs)

    def send_many(self, calls: Iterable[Call]) -> list[Promise[R]]:
        """Send one message per call, all in one go; their promises, in the order of ``calls``.

        Each call is a tuple of positional arguments or a dict of keyword arguments::

            promises = resize.send_many((path, 256) for path in paths)
            resize.send_many({"path": p, "size": 256} for p in paths)

        (A task whose one argument is itself a tuple or a dict takes ``(value,)``.) Every
        call is validated against the type hints and ``App(max_payload=...)`` before
        anything is sent: a bad one raises EncodeError naming it (``calls[3]: ...``) and
        none is sent. The messages then go to the backend as one request, without the
        per-message future of ``send`` (``pigeon.app.SEND_CHUNK`` messages per backend
        call, which the Redis and PostgreSQL backends pipeline in chunks). In async code
        they are durable once ``await app.flush()`` (or a promise's ``sent()``) returns;
        if storing fails, every promise of the call rejects (some messages may be stored,
        as with any failed send). In sync code this blocks until they are stored. Inside
        ``App.transaction`` they are written with the block's other sends.

        Typing: ``calls`` is not checked by mypy against the task's signature, as
        ``send``'s arguments are, because a ParamSpec types one call, not a list of them;
        the result is ``list[Promise[R]]``.
        """
        return BoundTask(self, self.defaults).send_many(calls)

    def fire_many(self, calls: Iterable[Call]) -> None:
        """``send_many`` without keeping outcomes (``fire`` for many calls): the fastest way
        to send a lot of messages."""
        BoundTask(self, self.defaults).fire_many(calls)

    def messages(
        self,
        calls: Iterable[Call],
        options: TaskOptions | None = None,
        *,
        result_ttl: float | None = None,
    ) -> list[Message]:
        """The messages these calls become (all validated and size-checked before any is
        made; EncodeError names the first bad call)."""
        opts = options or self.defaults
        calls = calls if isinstance(calls, list | tuple) else list(calls)
        raw_args, raw_kwargs = self.codec.encode_many(calls)
        limit = self.app.max_payload
        if raw_kwargs and max(map(len, raw_kwargs)) + max(map(len, raw_args)) > limit:
            for i, (args, kwargs) in enumerate(zip(raw_args, raw_kwargs, strict=True)):
                if len(args) + len(kwargs) > limit:
                    raise EncodeError(f"calls[{i}]: {self._too_large(len(args) + len(kwargs))}")
        base = msgspec.structs.replace(self._template_for(opts, result_ttl), created_at=time.time())
        replace = msgspec.structs.replace
        ids = new_ids(len(calls))
        if all(args is EMPTY_ARGS for args in raw_args):
            return [
                replace(base, id=mid, kwargs=kw) for mid, kw in zip(ids, raw_kwargs, strict=True)
            ]
        return [
            replace(base, id=mid, args=args, kwargs=kw)
            for mid, args, kw in zip(ids, raw_args, raw_kwargs, strict=True)
        ]

    def message(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions | None = None,
        *,
        result_ttl: float | None = None,
    ) -> Message:
        """The message a call with these arguments becomes (validated and size-checked)."""
        opts = options or self.defaults
        raw_args, raw_kwargs = self.codec.encode_args(args, kwargs)
        size = len(raw_args) + len(raw_kwargs)
        if size > self.app.max_payload:
            raise EncodeError(self._too_large(size))
        return self._message(opts, raw_args, raw_kwargs, result_ttl)

    def _too_large(self, size: int) -> str:
        return (
            f"{self.name}(): the arguments encode to {size:,} bytes, over the limit of "
            f"{self.app.max_payload:,} bytes; store large data elsewhere and send a reference,"
            " or raise App(max_payload=...)"
        )

    def follow_up(
        self, after: str | None, mode: Mode | None, options: TaskOptions | None = None
    ) -> Message:
        """A message of this task that runs with the outcome of message ``after``."""
        return self._message(options or self.defaults, None, None, None, after=after, mode=mode)

    def _message(
        self,
        opts: TaskOptions,
        raw_args: msgspec.Raw | None,
        raw_kwargs: msgspec.Raw | None,
        result_ttl: float | None,
        **extra: Any,
    ) -> Message:
        template = self._template_for(opts, result_ttl)
        fields: dict[str, Any] = {"id": new_id(), "created_at": time.time(), **extra}
        if raw_args is not None and raw_args is not EMPTY_ARGS:
            fields["args"] = raw_args
        if raw_kwargs is not None:
            fields["kwargs"] = raw_kwargs
        return msgspec.structs.replace(template, **fields)

    def _template_for(self, opts: TaskOptions, result_ttl: float | None) -> Message:
        template = self._templates.get((opts, result_ttl))
        if template is None:
            if len(self._templates) >= 64:  # per-call options (keys, etas) must not pile up
                self._templates.clear()
            template = self._templates[(opts, result_ttl)] = self._template(opts, result_ttl)
        return template

    def _template(self, opts: TaskOptions, result_ttl: float | None) -> Message:
        """What every message sent with these options shares (built once per options).

        A relative ``expires`` (like ``delay``) travels as it is and the backend resolves it
        on its own clock at enqueue: the sender's clock decides no time.
        """
        expires = opts.expires
        return Message(
            id="",
            task=self.name,
            queue=opts.queue,
            priority=opts.priority,
            delay=opts.delay,
            run_at=_epoch(opts.eta) if opts.eta is not None else None,
            max_attempts=opts.retries + 1,
            max_deliveries=opts.max_deliveries,
            timeout=opts.timeout,
            lease=opts.lease,
            key=opts.key,
            expires_at=_epoch(expires) if isinstance(expires, datetime) else None,
            expires=None if expires is None or isinstance(expires, datetime) else expires,
            result_ttl=opts.result_ttl if result_ttl is None else result_ttl,
        )


class BoundTask(Generic[P, R]):
    """A task with options set for the sends made through it (``task.options(...)``)."""

    def __init__(self, task: Task[P, R], options: TaskOptions) -> None:
        self.task = task
        self.opts = options

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def app(self) -> App:
        return self.task.app

    @property
    def codec(self) -> TaskCodec:
        return self.task.codec

    def follow_up(self, after: str | None, mode: Mode | None) -> Message:
        """A message of the task, with these options, that runs with message ``after``'s
        outcome (``promise.then(task.options(...))``)."""
        return self.task.follow_up(after, mode, self.opts)

    def send(self, *args: P.args, **kwargs: P.kwargs) -> MessagePromise[R]:
        """Send a message to run the task on a worker; returns its Promise at once."""
        message = self.task.message(args, kwargs, self.opts)
        return self.task.app.send_message(message, self.task)

    def fire(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Send without keeping an outcome: nothing to wait for, nothing stored."""
        message = self.task.message(args, kwargs, self.opts, result_ttl=0.0)
        self.task.app.send_message(message, self.task)

    def send_many(self, calls: Iterable[Call]) -> list[Promise[R]]:
        """``Task.send_many`` with these options."""
        messages = self.task.messages(calls, self.opts)
        return self.task.app.send_messages(messages, self.task)

    def fire_many(self, calls: Iterable[Call]) -> None:
        """``Task.fire_many`` with these options."""
        messages = self.task.messages(calls, self.opts, result_ttl=0.0)
        self.task.app.send_messages(messages, self.task, promises=False)


def _is_async(fn: Callable[..., Any]) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - objects with an async __call__
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)
