"""Socket.IO emits in the `@socket.io/redis-emitter` wire format the NestJS servers read."""

from __future__ import annotations

from typing import Any

import msgpack

from vamu_tasks.notify.socketio import SocketIOEmitter, encode_emit

PAYLOAD = {"jobId": "6f1c", "feature": "inspiration", "status": "succeeded"}


def decoded(body: bytes) -> Any:
    return msgpack.unpackb(body)


def test_an_emit_to_one_room_goes_to_that_rooms_channel() -> None:
    channel, _ = encode_emit("inspiration-ready", PAYLOAD, rooms=["user:u-ada"])

    assert channel == "socket.io#/#user:u-ada#"


def test_an_emit_to_several_rooms_goes_to_the_namespace_channel() -> None:
    channel, body = encode_emit("inspiration-ready", PAYLOAD, rooms=["user:u-ada", "user:u-dev"])

    assert channel == "socket.io#/#"
    assert decoded(body)[2]["rooms"] == ["user:u-ada", "user:u-dev"]


def test_an_emit_to_no_room_is_a_broadcast_on_the_namespace_channel() -> None:
    channel, body = encode_emit("inspiration-ready", PAYLOAD)

    assert channel == "socket.io#/#"
    assert decoded(body)[2]["rooms"] == []


def test_the_body_decodes_to_the_emitter_packet() -> None:
    _, body = encode_emit("inspiration-ready", PAYLOAD, rooms=["user:u-ada"])

    assert decoded(body) == [
        "emitter",
        {"type": 2, "data": ["inspiration-ready", PAYLOAD], "nsp": "/"},
        {"rooms": ["user:u-ada"], "flags": {}, "except": []},
    ]


def test_the_key_and_namespace_are_part_of_the_channel_and_packet() -> None:
    channel, body = encode_emit("x", {}, rooms=["r"], nsp="/admin", key="vamu-io")

    assert channel == "vamu-io#/admin#r#"
    assert decoded(body)[1]["nsp"] == "/admin"


class RecordingRedis:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, channel: str, message: bytes) -> int:
        self.published.append((channel, message))
        return 1


def test_the_emitter_publishes_one_message_to_the_rooms_channel() -> None:
    redis = RecordingRedis()

    SocketIOEmitter(redis, key="socket.io").emit("user:u-ada", "ai-job-failed", {"jobId": "1"})

    [(channel, body)] = redis.published
    assert channel == "socket.io#/#user:u-ada#"
    assert decoded(body)[1]["data"] == ["ai-job-failed", {"jobId": "1"}]
