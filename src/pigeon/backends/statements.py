"""Named SQL statements kept in ``.sql`` files beside the backend that runs them.

A file holds any number of statements, each under a ``-- name: NAME`` line::

    -- name: fetch_due
    SELECT ...;

``load(package, filename)`` reads the file shipped in ``package`` once and returns the
statements by name, in file order. SQLite and PostgreSQL both keep their queries this way, so
a reader finds every statement a backend runs in one file, with its comment beside it.
"""

from __future__ import annotations

import functools
import importlib.resources
import re

_NAME = re.compile(r"^-- name: (\w+)[ \t]*\n", flags=re.MULTILINE)


@functools.cache
def load(package: str, filename: str) -> dict[str, str]:
    """The statements of ``package``'s file ``filename``, by name (stripped of blank lines
    around them; comments inside a statement are kept). Raises ValueError for a file with a
    name given twice or text before its first name."""
    text = importlib.resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    return parse(text, f"{package}/{filename}")


def parse(text: str, origin: str = "<sql>") -> dict[str, str]:
    """The statements of ``text`` by name (see ``load``)."""
    sections = _NAME.split(text)
    head = "\n".join(
        line for line in sections[0].splitlines() if line.strip() and not line.startswith("--")
    )
    if head:
        raise ValueError(f"{origin}: SQL before the first '-- name:' line: {head[:60]!r}")
    found: dict[str, str] = {}
    for name, body in zip(sections[1::2], sections[2::2], strict=True):
        if name in found:
            raise ValueError(f"{origin}: the statement {name!r} is named twice")
        found[name] = body.strip()
    return found
