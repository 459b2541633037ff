"""``manage.py pigeon VERB ...``: pigeon's command line on the project's App.

``python manage.py pigeon worker -c 20 -q default,emails`` is ``pigeon worker APP -c 20 -q
default,emails`` with APP the App of ``settings.PIGEON``: the same click command, with its
options, signals, supervisor and exit codes (``pigeon.cli``), not a copy. Every verb works
so: those that take an APP argument get it, those with ``--app`` get that unless ``--url``
or ``--app`` is given (``manage.py pigeon status``, ``manage.py pigeon dlq list``).

With ``-p N`` the supervisor starts ``python -m pigeon worker APP`` processes; they inherit
``DJANGO_SETTINGS_MODULE`` and find the project through ``PYTHONPATH``, which this command
extends with the directory the settings module is imported from.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from typing import Any

import click
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pigeon.cli import cli
from pigeon.integrations.django.apps import APP_SPEC


class Command(BaseCommand):  # type: ignore[misc]  # Django has no types
    help = (
        "Run pigeon's command line on this project's App (settings.PIGEON): "
        "`pigeon worker -c 20`, `pigeon status`, `pigeon dlq list` ..."
    )

    def run_from_argv(self, argv: list[str]) -> None:
        # The arguments go to click as they are: Django's parser would take --help, -v and
        # --settings for itself (manage.py has read --settings already).
        _share_project_path()
        cli.main(args=with_app(argv[2:]), prog_name=f"{Path(argv[0]).name} {argv[1]}")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("words", nargs=argparse.REMAINDER, help="a pigeon verb and its options")

    def handle(self, *args: Any, **options: Any) -> None:
        """``call_command("pigeon", "status")``: a failure is a CommandError."""
        _share_project_path()
        try:
            cli.main(args=with_app([*args, *options.get("words", [])]), prog_name="pigeon")
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise CommandError(f"pigeon exited with {exc.code}") from None


def with_app(words: list[str]) -> list[str]:
    """``words`` (a pigeon command line, without ``pigeon``) naming the project's App: after
    the verb (and the subverb of a group such as ``dlq``), the APP argument if it takes one
    first, else ``--app APP`` if it has that option and neither ``--app`` nor ``--url`` is
    given."""
    command: click.Command = cli
    at = 0
    while isinstance(command, click.Group):
        while at < len(words) and words[at].startswith("-"):
            at += 1  # the group's own options (--debug)
        if at >= len(words) or words[at] not in command.commands:
            return words  # no verb: click says what is wrong, or shows the help
        command = command.commands[words[at]]
        at += 1
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if arguments and arguments[0].name == "app_spec":
        return [*words[:at], APP_SPEC, *words[at:]]
    has_option = any(isinstance(p, click.Option) and p.name == "app_spec" for p in command.params)
    given = {"--app", "-A", "--url"}.intersection(w.split("=", 1)[0] for w in words[at:])
    if has_option and not given:
        return [*words[:at], "--app", APP_SPEC, *words[at:]]
    return words


def _share_project_path() -> None:
    """Put the directory the settings module is imported from on ``PYTHONPATH``, for the
    worker processes of ``-p N`` (``python -m pigeon``, started elsewhere than manage.py)."""
    top = settings.SETTINGS_MODULE.split(".", 1)[0]
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin is None:
        return
    origin = Path(spec.origin)
    root = origin.parent.parent if origin.name == "__init__.py" else origin.parent
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(root) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(root), *paths])
