"""``redis://`` and ``rediss://``: Lua scripts for every atomic step, pub/sub and blocking
pops for wake-ups, Redis Cluster through one hash tag per app."""

from pigeon.backends.redis.backend import ENQUEUE_CHUNK, RedisBackend

__all__ = ["ENQUEUE_CHUNK", "RedisBackend"]
