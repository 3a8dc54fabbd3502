"""`RedisChunkSink`: what one chunk costs on the wire to Redis."""

from __future__ import annotations

import uuid
from typing import Any

import msgpack

from vamu_tasks.domain import ChatChunk
from vamu_tasks.notify.chunks import STREAM_TTL_S, RedisChunkSink, stream_key


class RoundTrips:
    """A redis-py client that only sends pipelines: each `execute` is one round trip."""

    def __init__(self) -> None:
        self.sent: list[list[tuple[Any, ...]]] = []

    def pipeline(self, transaction: bool = True) -> Pipeline:
        assert transaction is False, "a chunk needs no MULTI/EXEC"
        return Pipeline(self)


class Pipeline:
    def __init__(self, client: RoundTrips) -> None:
        self._client = client
        self._commands: list[tuple[Any, ...]] = []

    def xadd(self, key: str, fields: dict[str, str], **_: Any) -> None:
        self._commands.append(("XADD", key, fields))

    def expire(self, key: str, seconds: int) -> None:
        self._commands.append(("EXPIRE", key, seconds))

    def publish(self, channel: str, message: bytes) -> None:
        self._commands.append(("PUBLISH", channel, message))

    def execute(self) -> list[Any]:
        self._client.sent.append(self._commands)
        return []


def test_a_chunk_is_one_round_trip_that_appends_to_the_stream_before_it_publishes() -> None:
    redis = RoundTrips()
    sink = RedisChunkSink(redis)  # type: ignore[arg-type]
    job_id = uuid.uuid4()

    sink.chunk(ChatChunk(job_id, "u-ada", "c-1", 1, 0, "Ezra Collective"))
    sink.chunk(ChatChunk(job_id, "u-ada", "c-1", 1, 1, " play at nine."))

    assert len(redis.sent) == 2
    for seq, commands in enumerate(redis.sent):
        assert [c[0] for c in commands] == ["XADD", "EXPIRE", "PUBLISH"]
        (_, key, fields), (_, _, ttl), (_, channel, body) = commands
        assert (key, ttl) == (stream_key(job_id), STREAM_TTL_S)
        assert fields["seq"] == str(seq)
        assert channel == "socket.io#/#user:u-ada#"
        event, data = msgpack.unpackb(body)[1]["data"]
        assert (event, data["seq"], data["delta"]) == ("chat-chunk", seq, fields["delta"])
