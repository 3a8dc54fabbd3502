"""Chunk sinks: the user's Socket.IO room plus a replayable Redis Stream, or a log."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import redis

from vamu_tasks.domain import ChatChunk, ChatRestart
from vamu_tasks.events import ChatChunkEvent, ChatRestartEvent
from vamu_tasks.notify.socketio import encode_emit
from vamu_tasks.notify.transports import room_for

log = logging.getLogger("vamu_tasks.notify")

STREAM_MAXLEN = 2000
STREAM_TTL_S = 3600


def stream_key(job_id: uuid.UUID | str) -> str:
    """The Redis Stream holding a chat job's chunks, for clients that reconnect."""
    return f"vamu:chat:{job_id}"


class RedisChunkSink:
    """Emits each chunk to `user:{id}` and appends it to a bounded, expiring Redis Stream."""

    def __init__(self, client: redis.Redis, *, key: str = "socket.io", nsp: str = "/") -> None:
        self._redis = client
        self._key = key
        self._nsp = nsp

    def chunk(self, chunk: ChatChunk) -> None:
        event = ChatChunkEvent(
            jobId=chunk.job_id,
            requestId=chunk.request_id,
            rerunOf=chunk.rerun_of,
            conversationId=chunk.conversation_id,
            seq=chunk.seq,
            delta=chunk.delta,
            attempt=chunk.attempt,
        )
        self._send(chunk.job_id, chunk.user_id, "chat-chunk", event.payload())

    def restart(self, restart: ChatRestart) -> None:
        event = ChatRestartEvent(
            jobId=restart.job_id,
            requestId=restart.request_id,
            rerunOf=restart.rerun_of,
            conversationId=restart.conversation_id,
            attempt=restart.attempt,
        )
        self._send(restart.job_id, restart.user_id, "chat-restart", event.payload())

    def _send(self, job_id: uuid.UUID, user_id: str, event: str, payload: dict[str, Any]) -> None:
        # Streaming is best effort: the committed reply and chat-reply-ready are what count.
        # One round trip: XADD, EXPIRE and the Socket.IO PUBLISH in one pipeline (not a
        # transaction), run in that order, so a client that sees the event live and then
        # replays finds it in the stream.
        channel, body = encode_emit(
            event, payload, rooms=[room_for(user_id)], nsp=self._nsp, key=self._key
        )
        key = stream_key(job_id)
        fields = {"event": event, **{k: str(v) for k, v in payload.items()}}
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.xadd(key, fields, maxlen=STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
            pipe.expire(key, STREAM_TTL_S)
            pipe.publish(channel, body)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not stream %s for job %s: %s", event, job_id, exc)


class LogChunkSink:
    """For setups without Socket.IO: chunks go to the debug log."""

    def chunk(self, chunk: ChatChunk) -> None:
        log.debug("chat-chunk job=%s seq=%d %r", chunk.job_id, chunk.seq, chunk.delta)

    def restart(self, restart: ChatRestart) -> None:
        log.info("chat-restart job=%s attempt=%d", restart.job_id, restart.attempt)


def replay_chunks(
    client: redis.Redis, job_id: uuid.UUID | str, *, after_seq: int = -1
) -> list[dict[str, Any]]:
    """The latest attempt's chunks with seq > after_seq, in order (what a reconnect needs)."""
    entries = client.xrange(stream_key(job_id)) or []
    chunks: list[dict[str, Any]] = []
    latest = 0
    for _id, raw in entries:
        fields = {_text(k): _text(v) for k, v in (raw or {}).items()}
        attempt = int(fields.get("attempt", 1))
        if attempt > latest:
            latest, chunks = attempt, []
        if fields.get("event") == "chat-chunk" and int(fields["seq"]) > after_seq:
            chunks.append({"seq": int(fields["seq"]), "delta": fields["delta"], "attempt": attempt})
    return chunks


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
