"""``sqlite:///path.db``: the embedded default, one file shared by every process on a machine."""

from pigeon.backends.sqlite.backend import SQLiteBackend
from pigeon.backends.sqlite.store import ENQUEUE_CHUNK, SCHEMA_VERSION

__all__ = ["ENQUEUE_CHUNK", "SCHEMA_VERSION", "SQLiteBackend"]
