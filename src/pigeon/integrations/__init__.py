"""pigeon in the frameworks users run it from.

``pigeon.integrations.asgi``: the App opens and closes with an ASGI app's lifespan
(FastAPI, Starlette, or any ASGI app through a middleware). ``pigeon.integrations.django``:
a Django app (settings, ``tasks.py`` autodiscovery, ``manage.py pigeon``, sends that follow
``transaction.atomic()``). Each integration is imported on its own; importing pigeon imports
none of them, nor any framework.
"""
