"""Which task messages a Redis broker holds, so the reaper can tell a lost message from a slow one.

kombu's Redis transport takes a message with BRPOP and records it as unacknowledged with a
separate MULTI/HSET. A worker killed, or a Redis that dies, between the two drops the message:
the job's row stays `queued` and no visibility timeout brings it back. A queued job whose id is
neither in its queue nor among the unacknowledged messages has lost its message.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import redis

# kombu.transport.redis: one list per priority step, named `<queue>\x06\x16<step>` above 0.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED_KEY = "unacked"


class RedisBrokerInventory:
    """Reads the task ids in the broker's queue lists and its unacknowledged hash."""

    def __init__(
        self, client: redis.Redis, *, key_prefix: str = "", max_messages: int = 5000
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        # A backlog longer than this is not read every reaper pass; the slower
        # `VAMU_STALE_QUEUED_S` check covers the jobs in it.
        self._max_messages = max_messages

    def _lists(self, queues: Collection[str]) -> list[str]:
        return [
            f"{self._prefix}{queue}{PRIORITY_SEPARATOR}{step}" if step else f"{self._prefix}{queue}"
            for queue in sorted(queues)
            for step in PRIORITY_STEPS
        ]

    def task_ids(self, queues: Collection[str]) -> set[str] | None:
        """Ids of every task message waiting in `queues` or taken and not acknowledged (any
        queue), or None when there are more than `max_messages` to read."""
        lists = self._lists(queues)
        unacked = f"{self._prefix}{UNACKED_KEY}"
        pipe = self._client.pipeline(transaction=False)
        for key in lists:
            pipe.llen(key)
        pipe.hlen(unacked)
        if sum(int(n) for n in pipe.execute()) > self._max_messages:
            return None
        pipe = self._client.pipeline(transaction=False)
        for key in lists:
            pipe.lrange(key, 0, -1)
        pipe.hvals(unacked)
        *waiting, taken = pipe.execute()
        found = [_task_id(json.loads(raw)) for messages in waiting for raw in messages]
        # An unacknowledged entry is `[message, exchange, routing_key]`.
        found += [_task_id(json.loads(raw)[0]) for raw in taken]
        return {task_id for task_id in found if task_id is not None}

    def close(self) -> None:
        self._client.close()


def _task_id(message: Any) -> str | None:
    # Celery's message protocol 2 carries the task id in the headers, the body stays encoded.
    try:
        task_id = message["headers"]["id"]
    except (KeyError, TypeError):
        return None
    return task_id if isinstance(task_id, str) else None
