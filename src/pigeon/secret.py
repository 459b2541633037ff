"""``pigeon.Secret[T]``: an argument that never shows in logs, the CLI or error text.

A task that takes ``password: pigeon.Secret[str]`` receives a ``Secret`` whose ``repr`` and
``str`` are ``***``; ``.reveal()`` gives the value. It travels as ``{"$secret": value}``, so
``pigeon inspect`` and every other reader of stored messages can recognise and redact it
without knowing the task. It is not encrypted: whoever can read the broker can read it.
"""

from __future__ import annotations

import hmac
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: The key a Secret is stored under in encoded arguments.
SECRET_KEY = "$secret"
REDACTED = "***"


class Secret(Generic[T]):
    """A value that prints as ``***``. ``reveal()`` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def reveal(self) -> T:
        """The secret value itself: use it, don't log it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        a, b = self._value, other._value
        if isinstance(a, str) and isinstance(b, str):
            return hmac.compare_digest(a.encode(), b.encode())
        return bool(a == b)

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> Any:
        raise TypeError("a pigeon.Secret cannot be pickled")


def redact(value: Any) -> Any:
    """``value`` (decoded JSON) with every encoded Secret replaced by ``***``."""
    if isinstance(value, dict):
        if len(value) == 1 and SECRET_KEY in value:
            return REDACTED
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
