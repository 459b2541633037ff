"""What a verb needs before it can do anything: the state the whole command shares, the App
named on the command line (or one made from ``--url``), and one call to its backend."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from pigeon.app import App
from pigeon.backends import DEFAULT_URL, Backend, redact
from pigeon.backends.base import RetryingBackend
from pigeon.errors import ConfigError, PigeonError

T = TypeVar("T")

#: Seconds a control command waits for the backend before it says it did not answer.
BACKEND_TIMEOUT = 30.0
#: Seconds a verb's backend calls keep retrying a server that cannot be reached, on a
#: backend that retries (Redis: 30 s by default, for workers to ride out a restart): long
#: enough for a blip, short enough to say at once, in one line, that the server is down.
RETRY_FOR = 3.0


@dataclass
class CommandState:
    """What the whole command shares: --debug, and the URLs whose passwords to hide."""

    debug: bool = False
    urls: set[str] = field(default_factory=set)

    def scrub(self, text: str) -> str:
        for url in self.urls:
            text = text.replace(url, redact(url))
            password = _password(url)
            if password and len(password) >= 3:
                text = text.replace(password, "***")
        return text


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def load_app(spec: str) -> App:
    """The App named by ``module:attribute``, imported with the current directory on
    ``sys.path`` (like uvicorn). Raises ConfigError with a one-line reason."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"APP must be module:attribute (like myapp:app), not {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise ConfigError(
                f"cannot import {module_name!r}: no module named {missing!r}"
                f" (looked in {cwd} and on sys.path)"
            ) from exc
        raise ConfigError(f"importing {module_name!r} failed: {exc}") from exc
    except PigeonError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
            " (run `pigeon --debug ...` for the traceback)"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, App):
        raise ConfigError(f"{spec} is a {type(obj).__name__}, not a pigeon.App")
    return obj


def app_for(state: CommandState, app_spec: str | None, url: str | None) -> App:
    """The App of APP, or one on ``url`` (default: ``PIGEON_URL``, else the default URL),
    for a verb other than ``worker``: its backend retries an unreachable server for at most
    ``RETRY_FOR`` seconds. Its URL is added to those whose password errors hide."""
    if app_spec and url:
        raise ConfigError("give APP or --url, not both (the App has its own URL)")
    app = (
        load_app(app_spec) if app_spec else App(url or os.environ.get("PIGEON_URL") or DEFAULT_URL)
    )
    state.urls.add(app.url)
    backend = app.backend
    if isinstance(backend, RetryingBackend):
        backend.retry_for = min(backend.retry_for, RETRY_FOR)
    return app


def call_backend(app: App, op: Callable[[Backend], Awaitable[T]]) -> T:
    """Run one backend operation for this command on an event loop of its own, then close
    the backend. Bounded by BACKEND_TIMEOUT."""

    async def run() -> T:
        try:
            async with asyncio.timeout(BACKEND_TIMEOUT):
                return await op(await app.open())  # open: this loop is the App's home now
        except TimeoutError as exc:
            if isinstance(exc, PigeonError):
                raise
            raise PigeonError(
                f"the backend {redact(app.url)} did not answer within {BACKEND_TIMEOUT:.0f} s"
            ) from None
        finally:
            await app.close()

    return asyncio.run(run())


def backend_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--url`` and ``--app``: the backend a verb works on."""
    f = click.option(
        "--url",
        metavar="URL",
        help="Backend URL (default: $PIGEON_URL, else sqlite:///pigeon.db).",
    )(f)
    f = click.option(
        "--app",
        "-A",
        "app_spec",
        metavar="APP",
        help="module:attribute of a pigeon.App whose backend to use, instead of --url.",
    )(f)
    return f
