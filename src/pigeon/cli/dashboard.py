"""``pigeon dashboard``: the dashboard of an App, served by uvicorn.

The dashboard's web stack is an optional extra (``pigeon[dashboard]``: Starlette, Jinja2,
uvicorn), so this module does not import it: ``pigeon.dashboard`` is loaded by name when
the verb runs, as ``pigeon.backends`` loads a broker's module, and every other verb starts
without it. Whether the bind is allowed is decided first, before anything is loaded.
"""

from __future__ import annotations

import importlib

import click
from rich.markup import escape

from pigeon.addresses import is_loopback
from pigeon.backends import redact
from pigeon.cli.backend import CommandState, app_for, backend_options
from pigeon.cli.output import CommandError, stderr_console
from pigeon.errors import ConfigError

#: The environment variable ``--token`` defaults to (``pigeon.dashboard.TOKEN_ENV``).
TOKEN_ENV = "PIGEON_DASHBOARD_TOKEN"
_MISSING = "the dashboard needs its extra: pip install 'pigeon[dashboard]'"


def check_bind(host: str, token: str | None) -> None:
    """Refuse, in one line, to serve another machine without a token."""
    if not is_loopback(host) and not token:
        raise CommandError(
            f"--host {host} would serve other machines: give a token (--token or"
            f" {TOKEN_ENV}) or bind to 127.0.0.1"
        )


@click.command()
@click.argument("app_arg", metavar="[APP]", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind to.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    metavar="TOKEN",
    help=f"Required of every request (bearer header or login form); default ${TOKEN_ENV}."
    " Needed to bind to anything but 127.0.0.1.",
)
@click.option("--read-only", is_flag=True, help="Show everything, change nothing.")
@backend_options
@click.pass_obj
def dashboard(
    state: CommandState,
    app_arg: str | None,
    host: str,
    port: int,
    token: str | None,
    read_only: bool,
    app_spec: str | None,
    url: str | None,
) -> None:
    """Serve the dashboard: queues, workers, dead letters, messages, pause and resume.

    Bound to 127.0.0.1 unless --host says otherwise; any other address needs a token.
    """
    if app_arg and app_spec:
        raise ConfigError("give APP once: as an argument or as --app")
    check_bind(host, token)
    try:
        web = importlib.import_module("pigeon.dashboard")
        uvicorn = importlib.import_module("uvicorn")
    except ImportError as exc:
        raise CommandError(f"{_MISSING} ({exc})") from None
    app = app_for(state, app_arg or app_spec, url)
    asgi = web.app(app, token=token or None, read_only=read_only)
    shown = f"[{host}]" if ":" in host else host
    stderr_console().print(
        f"pigeon dashboard of {escape(redact(app.url))} on http://{shown}:{port}/"
        + (" (read-only)" if read_only else ""),
        soft_wrap=True,
    )
    uvicorn.run(asgi, host=host, port=port, log_level="warning")
