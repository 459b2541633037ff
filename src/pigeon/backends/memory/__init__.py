"""``memory://``: the whole Backend contract inside one process, for tests and demos."""

from pigeon.backends.memory.backend import MemoryBackend

__all__ = ["MemoryBackend"]
