"""URL scheme -> backend class. Backends are imported only when their scheme is used."""

from __future__ import annotations

import importlib

from pigeon.backends.base import Backend, redact
from pigeon.errors import ConfigError

_SCHEMES: dict[str, str] = {
    "memory": "pigeon.backends.memory:MemoryBackend",
    "sqlite": "pigeon.backends.sqlite:SQLiteBackend",
}

DEFAULT_URL = "sqlite:///pigeon.db"


def from_url(url: str) -> Backend:
    """Make the backend a URL names (``memory://``, ``sqlite:///path.db``).

    Raises ConfigError naming the schemes that exist when the scheme is unknown.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    target = _SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(_SCHEMES))
        raise ConfigError(f"unknown backend URL {redact(url)!r}: the scheme must be one of {known}")
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    backend: Backend = cls(url)
    return backend


__all__ = ["DEFAULT_URL", "Backend", "from_url", "redact"]
