"""``nats://`` and ``tls://``: the Backend contract on NATS JetStream (nats-server 2.12+),
in progress. So far: reading the URL and opening a checked stream (``connections``), and
atomic batch publishes with an expected sequence per subject (``batch``). The backend class
is not written yet, so the scheme is not registered in ``pigeon.backends``."""

from pigeon.backends.nats.batch import (
    BatchConflict,
    BatchError,
    BatchUnknown,
    Write,
    publish_atomic,
)
from pigeon.backends.nats.connections import Target, open_stream, parse_url

__all__ = [
    "BatchConflict",
    "BatchError",
    "BatchUnknown",
    "Target",
    "Write",
    "open_stream",
    "parse_url",
    "publish_atomic",
]
