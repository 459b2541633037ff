"""``postgresql://``: ``FOR UPDATE SKIP LOCKED``, LISTEN/NOTIFY and transactional enqueue."""

from pigeon.backends.postgres.backend import (
    VACUUM_EVERY,
    Migration,
    PostgresBackend,
    latest_version,
    migrations,
)

__all__ = ["VACUUM_EVERY", "Migration", "PostgresBackend", "latest_version", "migrations"]
