"""The Python Socket.IO emitter speaks `@socket.io/redis-emitter` to real Node Socket.IO servers."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Any
from uuid import uuid4

import pytest
import redis
from redis.client import PubSub

from tests.support.node import NODE_DIR, require_node_modules
from tests.support.socketio import SocketIOListener
from vamu_tasks.notify.socketio import SocketIOEmitter, encode_emit

pytestmark = pytest.mark.e2e

REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def key() -> str:
    return f"vamu-test-{uuid4().hex[:8]}"


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


def capture_publishes(client: redis.Redis, key: str) -> PubSub:
    pubsub = PubSub(client.connection_pool)
    pubsub.psubscribe(f"{key}#*")
    confirmation = pubsub.get_message(timeout=5)
    assert confirmation is not None and confirmation["type"] == "psubscribe"
    return pubsub


def next_publish(pubsub: PubSub) -> tuple[str, bytes]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=deadline - time.monotonic())
        if message is not None and message["type"] == "pmessage":
            return message["channel"].decode(), message["data"]
    raise AssertionError("nothing was published")


def emit_from_node(key: str, rooms: Sequence[str], event: str, data: dict[str, Any]) -> None:
    node = require_node_modules()
    room_args = [arg for room in rooms for arg in ("--room", room)]
    args = ["--redis", REDIS_URL, "--key", key, *room_args, "--event", event]
    done = subprocess.run(
        [str(node), str(NODE_DIR / "emit_node.js"), *args, "--data", json.dumps(data)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr


def test_an_event_emitted_from_python_reaches_only_the_users_room(
    redis_client: redis.Redis, key: str
) -> None:
    emitter = SocketIOEmitter(redis_client, key=key)
    data = {"jobId": str(uuid4()), "feature": "inspiration", "status": "succeeded"}

    with SocketIOListener(REDIS_URL, ["u-ada", "u-bruno"], key=key) as listener:
        emitter.emit("user:u-ada", "inspiration-ready", data)
        emitter.emit("user:u-bruno", "ai-job-failed", {"jobId": "j-2", "errorKind": "timeout"})

        received = listener.wait_for("inspiration-ready", user="u-ada")
        listener.wait_for("ai-job-failed", user="u-bruno")

    assert received["data"] == data
    # Per socket, delivery keeps emit order: a stray first event would have arrived already.
    assert sorted((e["user"], e["event"]) for e in listener.events) == [
        ("u-ada", "inspiration-ready"),
        ("u-bruno", "ai-job-failed"),
    ]


PAYLOADS: list[dict[str, Any]] = [
    {"jobId": "9b2f7c4e-1d3a-4e5b-8c6d-7e8f9a0b1c2d", "feature": "inspiration", "status": "ok"},
    {
        "jobId": "j-1",
        "conversationId": "c-1",
        "seq": 70000,
        "delta": "Olá, ça va? 🎷 " + "x" * 300,
        "nested": {"list": [1, -1, -200, 2**31, -(2**33), 1.5, True, False, None], "empty": {}},
    },
]


@pytest.mark.parametrize("data", PAYLOADS, ids=["job-ready", "varied-types"])
@pytest.mark.parametrize("rooms", [["user:u-ada"], ["user:u-ada", "user:u-bruno"], []])
def test_python_publishes_the_same_channel_and_bytes_as_the_node_emitter(
    redis_client: redis.Redis, key: str, rooms: list[str], data: dict[str, Any]
) -> None:
    pubsub = capture_publishes(redis_client, key)
    try:
        emit_from_node(key, rooms, "chat-chunk", data)
        from_node = next_publish(pubsub)
        if len(rooms) == 1:
            SocketIOEmitter(redis_client, key=key).emit(rooms[0], "chat-chunk", data)
        else:
            redis_client.publish(*encode_emit("chat-chunk", data, rooms=rooms, key=key))
        from_python = next_publish(pubsub)
    finally:
        pubsub.close()

    assert from_python[0] == from_node[0]
    assert from_python[1].hex() == from_node[1].hex()
