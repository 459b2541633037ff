"""The project's App, made from Django's settings: ``PIGEON = {"url": ..., ...}``.

Every key but ``database`` is an argument of ``pigeon.App`` (``url``, ``queue``,
``result_ttl``, ``max_payload``, ``secret``, ``events``, ``tracing``, ``trace_parent``).
``database`` names the Django database whose transactions sends follow (default
``"default"``). Without a ``url``, the backend is that database itself when it is PostgreSQL
(schema ``pigeon``) or SQLite, so that sends inside ``transaction.atomic()`` are written in
the same transaction; otherwise ``PIGEON_URL``, else pigeon's default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from pigeon.integrations.django.following import DjangoApp

#: The keys of ``settings.PIGEON`` that are arguments of ``pigeon.App``.
APP_OPTIONS = frozenset(
    {"url", "queue", "result_ttl", "max_payload", "secret", "events", "tracing", "trace_parent"}
)

#: Host names that reach this machine's PostgreSQL the same way (no host: the local socket).
_LOCAL = frozenset({"", "localhost", "127.0.0.1", "::1"})


def app_from_settings() -> DjangoApp:
    """A new App made from ``settings.PIGEON`` (see the module). Raises
    ImproperlyConfigured for an unknown key or database alias."""
    given: Mapping[str, Any] = getattr(settings, "PIGEON", {})
    if not isinstance(given, Mapping):
        raise ImproperlyConfigured("settings.PIGEON must be a dict, like {'url': ...}")
    unknown = sorted(set(given) - APP_OPTIONS - {"database"})
    if unknown:
        raise ImproperlyConfigured(
            f"settings.PIGEON has unknown keys {unknown}; the keys are"
            f" {sorted(APP_OPTIONS | {'database'})}"
        )
    alias = given.get("database", "default")
    if alias not in settings.DATABASES:
        raise ImproperlyConfigured(
            f"settings.PIGEON['database'] is {alias!r}, which is not in settings.DATABASES"
        )
    options = {k: v for k, v in given.items() if k in APP_OPTIONS}
    url = options.pop("url", None) or database_url(alias) or os.environ.get("PIGEON_URL")
    app = DjangoApp(url, database=alias, **options)
    app.follows_database = same_database(app.url, alias)
    return app


def database_url(alias: str) -> str | None:
    """The pigeon URL of Django's database ``alias`` if pigeon can store there (PostgreSQL,
    in schema ``pigeon``; SQLite, the same file), else None."""
    connection = connections[alias]
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        name = str(db["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            return None  # not a file another process can open
        return "sqlite:///" + str(Path(name).resolve())  # sqlite:////abs/path.db
    if connection.vendor == "postgresql":
        user = quote(str(db.get("USER") or ""), safe="")
        password = quote(str(db.get("PASSWORD") or ""), safe="")
        credentials = f"{user}:{password}@" if password else f"{user}@" if user else ""
        host = str(db.get("HOST") or "localhost")
        if ":" in host and not host.startswith("/"):
            host = f"[{host}]"  # an IPv6 address
        port = f":{db['PORT']}" if db.get("PORT") else ""
        if host.startswith("/"):  # a socket directory: asyncpg takes it as ?host=
            return f"postgresql://{credentials}/{quote(str(db['NAME']))}?host={quote(host)}"
        return f"postgresql://{credentials}{host}{port}/{quote(str(db['NAME']))}"
    return None


def same_database(url: str, alias: str) -> bool:
    """Whether the pigeon backend ``url`` stores in Django's database ``alias`` itself, so
    that a send can be written through Django's connection, in its transaction."""
    connection = connections[alias]
    db = connection.settings_dict
    scheme = url.split("://", 1)[0].lower()
    if connection.vendor == "sqlite" and scheme == "sqlite":
        name = str(db["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            return False
        path = url.split("://", 1)[1][1:].split("?", 1)[0]
        return Path(path).resolve() == Path(name).resolve()
    if connection.vendor == "postgresql" and scheme in ("postgresql", "postgres"):
        parts = urlsplit(url)
        url_host = (parts.hostname or "").lower()
        db_host = str(db.get("HOST") or "").lower()
        if _local(url_host) != _local(db_host) or (not _local(url_host) and url_host != db_host):
            return False
        url_port = parts.port or 5432
        db_port = int(db.get("PORT") or 5432)
        return url_port == db_port and unquote(parts.path.lstrip("/")) == str(db["NAME"])
    return False


def _local(host: str) -> bool:
    return host in _LOCAL or host.startswith("/")  # a directory: the server's Unix socket
