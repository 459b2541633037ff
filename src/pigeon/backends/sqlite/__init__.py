"""``sqlite:///path.db``: the embedded default, one file shared by every process on a machine."""

from pigeon.backends.sqlite.backend import ENQUEUE_CHUNK, SCHEMA_VERSION, SQLiteBackend

__all__ = ["ENQUEUE_CHUNK", "SCHEMA_VERSION", "SQLiteBackend"]
