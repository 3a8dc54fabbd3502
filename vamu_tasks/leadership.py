"""Leases that let one process of many lead: a key in Redis, or a file lock on one machine.

Every notify worker contends; the holder renews its lease well within its length, releases it
on a clean shutdown, and a process that died simply stops renewing, so its lease runs out and
another takes it. Nothing here runs work: `housekeeping.Housekeeper` asks `hold()` and acts.
"""

from __future__ import annotations

import fcntl
import os
import socket
import uuid
from pathlib import Path
from typing import IO, Protocol

import redis

# Take the key if it is free, or extend it if we hold it; 1 when we hold it afterwards.
_HOLD = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return 1
end
return 0
"""
# Delete the key only if we still hold it (never another process's lease).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class LeaderLease(Protocol):
    owner: str

    def hold(self) -> bool:
        """Take or renew the lease; True while this process holds it. May raise when the
        store cannot be reached (the caller then counts itself as not leading)."""
        ...

    def holder(self) -> str | None:
        """Who holds the lease now, for logs; None when nobody does."""
        ...

    def release(self) -> None:
        """Give the lease up at once if held, so another process takes over without waiting."""
        ...


def lease_owner(node: str | None = None) -> str:
    """`<Celery node name or host>:<pid>:<random>`: who leads, as Redis and the logs show it."""
    return f"{node or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisLeaderLease:
    """`SET key owner NX PX`, renewed by its owner only; shared by every host on one Redis."""

    def __init__(self, client: redis.Redis, key: str, *, lease_s: float, owner: str) -> None:
        self._client = client
        self.key = key
        self.owner = owner
        self._lease_ms = max(1, int(lease_s * 1000))
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)

    def hold(self) -> bool:
        return bool(self._hold(keys=[self.key], args=[self.owner, self._lease_ms]))

    def holder(self) -> str | None:
        value = self._client.get(self.key)
        return value.decode(errors="replace") if isinstance(value, bytes) else value

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.owner])


class FileLeaderLease:
    """An exclusive `flock` on a file: for the embedded broker, where every process shares one
    machine and one data directory. The kernel drops the lock when its process dies."""

    def __init__(self, path: Path, *, owner: str) -> None:
        self.path = path
        self.owner = owner
        self._file: IO[str] | None = None

    def hold(self) -> bool:
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")  # held open for as long as we lead
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        file.seek(0)
        file.truncate()
        file.write(self.owner)
        file.flush()
        self._file = file
        return True

    def holder(self) -> str | None:
        if self._file is not None:
            return self.owner
        try:
            return self.path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
