"""Socket.IO emits from Python through Redis, in the `@socket.io/redis-emitter` wire format."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import msgpack

# The uid the Node emitter stamps on its packets; `@socket.io/redis-adapter` skips only its own uid.
EMITTER_UID = "emitter"
EVENT_PACKET = 2


class RedisPublisher(Protocol):
    def publish(self, channel: str, message: bytes) -> Any: ...


def encode_emit(
    event: str,
    data: Mapping[str, Any],
    *,
    rooms: Sequence[str] = (),
    nsp: str = "/",
    key: str = "socket.io",
) -> tuple[str, bytes]:
    """The Redis channel and msgpack body that `emitter.to(rooms).emit(event, data)` sends."""
    channel = f"{key}#{nsp}#"
    if len(rooms) == 1:
        # The Node emitter narrows a single-room emit to that room's channel.
        channel += f"{rooms[0]}#"
    packet = {"type": EVENT_PACKET, "data": [event, dict(data)], "nsp": nsp}
    opts = {"rooms": list(rooms), "flags": {}, "except": []}
    return channel, msgpack.packb([EMITTER_UID, packet, opts])


class SocketIOEmitter:
    """Emits events to Socket.IO rooms; the NestJS Socket.IO servers relay them to clients."""

    def __init__(self, redis: RedisPublisher, *, key: str = "socket.io", nsp: str = "/") -> None:
        self._redis = redis
        self._key = key
        self._nsp = nsp

    def emit(self, room: str, event: str, data: Mapping[str, Any]) -> None:
        channel, body = encode_emit(event, data, rooms=[room], nsp=self._nsp, key=self._key)
        self._redis.publish(channel, body)
