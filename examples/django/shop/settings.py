"""Settings of the shop example: a Django project whose orders are fulfilled by pigeon tasks.

The database comes from the environment, so that the same project runs on SQLite and on
PostgreSQL (the example's tests run both):

- ``SHOP_DATABASE=sqlite`` (the default): the file ``SHOP_SQLITE`` (default
  ``shop.sqlite3`` beside manage.py).
- ``SHOP_DATABASE=postgresql``: ``SHOP_PG_NAME`` (``shop``), ``SHOP_PG_HOST`` (``127.0.0.1``),
  ``SHOP_PG_PORT`` (``5432``), ``SHOP_PG_USER`` (``postgres``), ``SHOP_PG_PASSWORD``, and
  ``SHOP_PG_SCHEMA``, the schema Django's tables go in (default: the server's search_path).

pigeon stores its messages in that same database unless ``PIGEON_URL`` names another
backend: then sends inside ``transaction.atomic()`` are made on commit instead of being
written in the transaction (see the README).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "the-shop-example-is-not-deployed")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "pigeon.integrations.django",  # settings.PIGEON, tasks.py autodiscovery, manage.py pigeon
    "orders",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "shop.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _database() -> dict[str, object]:
    engine = os.environ.get("SHOP_DATABASE", "sqlite")
    if engine == "sqlite":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SHOP_SQLITE", str(BASE_DIR / "shop.sqlite3")),
            # IMMEDIATE: a transaction takes SQLite's write lock when it begins, waiting up
            # to `timeout` seconds for the workers' writes, instead of failing with
            # "database is locked" when it reads first and writes afterwards.
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    if engine == "postgresql":
        schema = os.environ.get("SHOP_PG_SCHEMA")
        return {
            "ENGINE": "django.db.backends.postgresql",  # psycopg 3
            "NAME": os.environ.get("SHOP_PG_NAME", "shop"),
            "HOST": os.environ.get("SHOP_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("SHOP_PG_PORT", "5432"),
            "USER": os.environ.get("SHOP_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("SHOP_PG_PASSWORD", ""),
            "OPTIONS": {"options": f"-c search_path={schema}"} if schema else {},
        }
    raise ValueError(f"SHOP_DATABASE must be sqlite or postgresql, not {engine!r}")


DATABASES = {"default": _database()}

# The App of this project. Without a url, pigeon stores in DATABASES["default"] itself
# (PostgreSQL: schema "pigeon"; SQLite: the same file).
PIGEON = {"url": os.environ.get("PIGEON_URL"), "queue": "default"}
