"""The dashboard (``pip install 'pigeon[dashboard]'``): ``pigeon dashboard APP``, or
``pigeon.dashboard.app(App)`` mounted in one's own ASGI app.

Pages: the overview (every queue by state, paused or not, dead letters, workers, and the
last hour's charts: ``pigeon.dashboard.charts``), the workers (with a stalled flag), the
dead letters (requeue, purge), a message's detail, pause and resume per queue, the periodic
tasks and the limits (``pigeon.dashboard.pages``). Pages refresh themselves and say when
the backend is unreachable (``pigeon.dashboard.live``). See ``pigeon.dashboard.security``
for who may see and act.
``import pigeon`` never imports this package (nor Starlette).
"""

from pigeon.dashboard.web import TOKEN_ENV, app

__all__ = ["TOKEN_ENV", "app"]
