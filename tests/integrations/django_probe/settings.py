"""Settings of the probe project: ``PROBE_DATABASES`` is ``DATABASES`` as JSON, and
``PROBE_PIGEON``, when set, ``PIGEON`` as JSON (unset: no ``PIGEON`` setting at all)."""

import json
import os

SECRET_KEY = "the-probe-project-is-not-deployed"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "pigeon.integrations.django",
    "tests.integrations.django_probe",
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = json.loads(os.environ["PROBE_DATABASES"])
if "PROBE_PIGEON" in os.environ:
    PIGEON = json.loads(os.environ["PROBE_PIGEON"])
