"""pigeon: asynchronous tasks and messages for Python.

Send work with ``task.send(...)``, get a ``Promise`` at once, and be told when it is done.
"""

from pigeon.app import App
from pigeon.context import Current, current
from pigeon.errors import (
    AggregateError,
    BackendError,
    Cancelled,
    ConfigError,
    EncodeError,
    PigeonError,
    ResultNotKept,
    TaskError,
    TaskNotFound,
    Timeout,
)
from pigeon.message import Event, Failure, Progress, Settled
from pigeon.promise import MessagePromise, Promise
from pigeon.secret import Secret
from pigeon.task import BoundTask, Task, TaskOptions

__all__ = [
    "AggregateError",
    "App",
    "BackendError",
    "BoundTask",
    "Cancelled",
    "ConfigError",
    "Current",
    "EncodeError",
    "Event",
    "Failure",
    "MessagePromise",
    "PigeonError",
    "Progress",
    "Promise",
    "ResultNotKept",
    "Secret",
    "Settled",
    "Task",
    "TaskError",
    "TaskNotFound",
    "TaskOptions",
    "Timeout",
    "current",
]
