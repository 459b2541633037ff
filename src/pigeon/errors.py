"""Every exception a pigeon user can catch, in one place.

All of them derive from :class:`PigeonError`, and every message says what happened and,
where there is something to do, what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class PigeonError(Exception):
    """The root of every error pigeon raises."""


class ConfigError(PigeonError):
    """The App, a task or a backend URL was configured in a way that cannot work."""


class BackendError(PigeonError):
    """The backend failed to carry out an operation (connection lost, storage error)."""


class EncodeError(PigeonError):
    """Arguments or a result could not be encoded or validated against the task's types."""


class TaskNotFound(PigeonError):
    """A message names a task that this App does not know."""


class Timeout(PigeonError, TimeoutError):
    """A wait ran out of time before the outcome arrived. The task may still run."""


class Cancelled(PigeonError):
    """The message was cancelled (before it ran, or while it ran); its promise rejects with this."""


class ResultNotKept(PigeonError):
    """The message was sent with ``fire()``, so no outcome is stored to wait for."""


class TaskError(PigeonError):
    """The task raised on the worker (or was dead-lettered); the promise rejects with this.

    ``type``, ``message`` and ``traceback`` describe the remote exception; ``id`` is the
    message whose outcome this is.
    """

    def __init__(
        self, type: str, message: str, traceback: str = "", id: str = "", state: str = "failed"
    ) -> None:
        self.type = type
        self.message = message
        self.traceback = traceback
        self.id = id
        self.state = state
        super().__init__(f"{type}: {message}" if message else type)

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskError, (self.type, self.message, self.traceback, self.id, self.state))


class AggregateError(PigeonError):
    """``Promise.any`` rejected because every input rejected; ``errors`` keeps input order."""

    def __init__(self, errors: Sequence[BaseException], message: str = "") -> None:
        self.errors = list(errors)
        super().__init__(message or f"all {len(self.errors)} promises were rejected")
