"""The worker: fetch -> run -> settle (``loop``), running tasks (``executor``), and
supervising worker processes (``supervisor``)."""

from pigeon.worker.loop import Worker

__all__ = ["Worker"]
