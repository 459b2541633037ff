"""The Django app ``pigeon.integrations.django``: the project's App and the autodiscovery of
``tasks.py``.

Put ``"pigeon.integrations.django"`` in ``INSTALLED_APPS``. When Django is set up, its
``ready()`` imports the ``tasks`` module of every installed app that has one, so that their
``@app.task`` functions are registered in a web process and in a worker alike. The App is
made from ``settings.PIGEON`` on first use (``get_app``) and kept by this app's config, one
per process, as Django keeps its settings and connections. ``manage.py migrate`` creates
pigeon's tables too when they live in a Django database (``config``).
"""

from __future__ import annotations

import threading
from typing import Any

import django
from django.apps import AppConfig, apps
from django.core.exceptions import ImproperlyConfigured
from django.db.models.signals import post_migrate
from django.utils.module_loading import autodiscover_modules

from pigeon.integrations.django.config import app_from_settings
from pigeon.integrations.django.following import DjangoApp

#: The label of this Django app (``apps.get_app_config(LABEL)``).
LABEL = "pigeon"
#: What ``pigeon worker`` and ``manage.py pigeon`` name the project's App by.
APP_SPEC = "pigeon.integrations.django:app"


class PigeonConfig(AppConfig):  # type: ignore[misc]  # Django has no types
    name = "pigeon.integrations.django"
    label = LABEL
    verbose_name = "pigeon"

    def __init__(self, app_name: str, app_module: object) -> None:
        super().__init__(app_name, app_module)
        self._app: DjangoApp | None = None
        self._making = threading.Lock()

    @property
    def app(self) -> DjangoApp:
        """The project's App, made from ``settings.PIGEON`` the first time it is asked for."""
        if self._app is None:
            with self._making:
                if self._app is None:
                    self._app = app_from_settings()
        return self._app

    def ready(self) -> None:
        autodiscover_modules("tasks")
        # Sent for each app with models (this one has none), so every time; opening is
        # done once.
        post_migrate.connect(self._create_store, dispatch_uid="pigeon.create_store")

    def _create_store(self, using: str, **kwargs: Any) -> None:
        """After ``manage.py migrate``: create (or upgrade) pigeon's tables when they live in
        the database just migrated. Done then, not by the first send: on SQLite, a send
        inside ``atomic()`` cannot create them while Django's transaction holds the lock."""
        app = self.app
        if app.follows_database and using == app.database:
            app.call_sync(app.open())


def get_app() -> DjangoApp:
    """The project's App (``settings.PIGEON``), for ``tasks.py`` (``app = get_app()``, then
    ``@app.task``) and for the worker.

    In a process where Django is not set up yet (``pigeon worker
    pigeon.integrations.django:app`` with ``DJANGO_SETTINGS_MODULE`` set) it sets Django up
    first, which imports every app's ``tasks.py``. Raises ImproperlyConfigured when
    ``pigeon.integrations.django`` is not in ``INSTALLED_APPS``.
    """
    if not apps.apps_ready:
        django.setup()
    try:
        config = apps.get_app_config(LABEL)
    except LookupError:
        raise ImproperlyConfigured(
            "add 'pigeon.integrations.django' to INSTALLED_APPS to use pigeon's Django app"
        ) from None
    assert isinstance(config, PigeonConfig)
    return config.app
