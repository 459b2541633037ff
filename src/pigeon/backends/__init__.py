"""URL scheme -> backend class. Backends are imported only when their scheme is used."""

from __future__ import annotations

import importlib

from pigeon.backends.base import Backend, redact
from pigeon.errors import ConfigError

_SCHEMES: dict[str, str] = {
    "memory": "pigeon.backends.memory:MemoryBackend",
    "sqlite": "pigeon.backends.sqlite:SQLiteBackend",
    "redis": "pigeon.backends.redis:RedisBackend",
    "rediss": "pigeon.backends.redis:RedisBackend",
    "postgresql": "pigeon.backends.postgres:PostgresBackend",
    "postgres": "pigeon.backends.postgres:PostgresBackend",
    "nats": "pigeon.backends.nats:NatsBackend",
    "tls": "pigeon.backends.nats:NatsBackend",
}

#: The extra that brings a scheme's client library, for the error when it is missing.
_EXTRAS = {
    "redis": "redis",
    "rediss": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
    "nats": "nats",
    "tls": "nats",
}

DEFAULT_URL = "sqlite:///pigeon.db"


def from_url(url: str) -> Backend:
    """Make the backend a URL names (``memory://``, ``sqlite:///path.db``, ``redis://``,
    ``postgresql://``, ``nats://``). The backend is not connected until ``open()``.

    Raises ConfigError naming the schemes that exist when the scheme is unknown.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    target = _SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(_SCHEMES))
        raise ConfigError(f"unknown backend URL {redact(url)!r}: the scheme must be one of {known}")
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRAS.get(scheme)
        if extra is None or exc.name in (None, module_name):
            raise
        raise ConfigError(
            f"{scheme}:// needs the {exc.name!r} package: pip install 'pigeon[{extra}]'"
        ) from None
    cls = getattr(module, cls_name)
    backend: Backend = cls(url)
    return backend


__all__ = ["DEFAULT_URL", "Backend", "from_url", "redact"]
