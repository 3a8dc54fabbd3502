"""`RedisHourlyQuota`: how many jobs a user may start per clock hour, counted in Redis."""

from __future__ import annotations

import time

import redis


class RedisHourlyQuota:
    """A fixed-window counter per user and hour; shared by every bridge process."""

    def __init__(self, client: redis.Redis, *, limit: int, prefix: str = "vamu:quota") -> None:
        self._redis = client
        self._limit = limit
        self._prefix = prefix

    @property
    def limit(self) -> int:
        return self._limit

    def _key(self, user_id: str, now: float | None = None) -> str:
        hour = int((time.time() if now is None else now) // 3600)
        return f"{self._prefix}:{user_id}:{hour}"

    def take(self, user_id: str) -> bool:
        """Count one job; False (and nothing counted) when the user is over the limit."""
        if self._limit <= 0:
            return True
        key = self._key(user_id)
        pipe = self._redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, 3700)
        count, _ = pipe.execute()
        if int(count) > self._limit:
            self._redis.decr(key)
            return False
        return True

    def give_back(self, user_id: str) -> None:
        """Undo a `take` for a job that turned out to exist already."""
        if self._limit > 0:
            self._redis.decr(self._key(user_id))
