"""The ways the app hears about a job: Socket.IO (Redis emitter), a signed webhook, a log line."""

from __future__ import annotations

import json
import logging

import httpx2
from pydantic import SecretStr

from vamu_tasks.domain import Notification
from vamu_tasks.errors import TransientError
from vamu_tasks.events import WebhookBody
from vamu_tasks.notify.signing import SIGNATURE_HEADER, sign
from vamu_tasks.notify.socketio import RedisPublisher, SocketIOEmitter

log = logging.getLogger("vamu_tasks.notify")


class DeliveryFailed(TransientError):
    error_kind = "internal"
    default_message = "A notification transport failed; it will be retried."


def room_for(user_id: str) -> str:
    return f"user:{user_id}"


class LogTransport:
    name = "log"

    def send(self, notification: Notification) -> None:
        log.info(
            "notification %s to %s: %s",
            notification.event,
            room_for(notification.user_id),
            json.dumps(dict(notification.data), sort_keys=True),
        )


class SocketIOTransport:
    name = "socketio"

    def __init__(self, redis: RedisPublisher, *, key: str = "socket.io") -> None:
        self._emitter = SocketIOEmitter(redis, key=key)

    def send(self, notification: Notification) -> None:
        try:
            self._emitter.emit(
                room_for(notification.user_id), notification.event, notification.data
            )
        except Exception as exc:
            raise DeliveryFailed(f"Socket.IO emit failed ({type(exc).__name__}).") from exc


def webhook_body(notification: Notification) -> bytes:
    """The bytes POSTed and signed: `{id, event, userId, data}`, compact JSON."""
    body = WebhookBody(
        id=notification.id,
        event=notification.event,
        userId=notification.user_id,
        data=dict(notification.data),
    )
    return json.dumps(body.model_dump(mode="json"), separators=(",", ":")).encode()


class WebhookTransport:
    """POSTs `{id, event, userId, data}` signed with the shared secret; 2xx means delivered."""

    name = "webhook"

    def __init__(self, *, url: str, secret: SecretStr, timeout_s: float = 5.0) -> None:
        self._url = url
        self._secret = secret
        self._client = httpx2.Client(timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def send(self, notification: Notification) -> None:
        body = webhook_body(notification)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, self._secret.get_secret_value()),
            "X-Vamu-Event-Id": str(notification.id),
        }
        try:
            response = self._client.post(self._url, content=body, headers=headers)
        except httpx2.TransportError as exc:
            raise DeliveryFailed(f"Webhook unreachable ({type(exc).__name__}).") from exc
        if response.status_code >= 300:
            raise DeliveryFailed(f"Webhook answered {response.status_code}.")
