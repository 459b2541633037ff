"""The probe app's tasks (found by autodiscovery): what a worker's Django connection is."""

from asgiref.sync import sync_to_async
from django.db import connection

import pigeon
from pigeon.integrations.django import get_app

app = get_app()


def _backend_pid() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    return [int(row[0]), pigeon.current().failures]


# One retry, at once: an attempt that meets a broken connection fails; the next one must not.
@app.task(retries=1, retry_backoff=0.01, retry_backoff_max=0.01)
def backend_pid() -> list[int]:
    """The PostgreSQL backend of this worker thread's Django connection, and how many
    attempts at this message failed before this one."""
    return _backend_pid()


@app.task(retries=1, retry_backoff=0.01, retry_backoff_max=0.01)
async def backend_pid_async() -> list[int]:
    """The same, through Django's async ORM path (``sync_to_async``, asgiref's thread)."""
    return await sync_to_async(_backend_pid)()


@app.task
def echo(label: str) -> str:
    """Returns its argument: what the tests send inside ``transaction.atomic()``."""
    return label
