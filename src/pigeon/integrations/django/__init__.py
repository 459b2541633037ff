"""pigeon in a Django project: settings, ``tasks.py`` autodiscovery, ``manage.py pigeon``, and
sends that follow ``transaction.atomic()``.

Put ``"pigeon.integrations.django"`` in ``INSTALLED_APPS`` and configure the App in
``settings.PIGEON`` (``config``). In an app's ``tasks.py``::

    from pigeon.integrations.django import get_app

    app = get_app()

    @app.task
    def send_receipt(order_id: int) -> None: ...

A send inside ``transaction.atomic()`` is durable only if the transaction commits (``app``:
written through Django's connection on PostgreSQL with psycopg 3 and on SQLite, sent on
commit elsewhere, and on psycopg2, with a warning logged once, as on SQLite outside
``transaction_mode: IMMEDIATE``: ``following``).
Workers: ``python manage.py pigeon worker [OPTIONS]`` (every ``pigeon`` verb works this way),
or ``pigeon worker pigeon.integrations.django:app`` with ``DJANGO_SETTINGS_MODULE`` set.
They recycle Django's database connections around each task as Django does around each
request, ``close_old_connections()`` before and after it (``connections``): a connection
past ``CONN_MAX_AGE`` or broken by a database restart is not used by the next task.
"""

from __future__ import annotations

from typing import Any

from pigeon.integrations.django.apps import APP_SPEC, get_app
from pigeon.integrations.django.following import DjangoApp

__all__ = ["APP_SPEC", "DjangoApp", "get_app"]


def __getattr__(name: str) -> Any:
    # ``app``, made on first access rather than at import: this module is imported while
    # Django is being set up, before settings can be read.
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
