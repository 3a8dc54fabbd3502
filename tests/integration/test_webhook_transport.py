"""`WebhookTransport` posting to a real local receiver that checks signatures as the app would."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from vamu_tasks.domain import Notification, event_id_for
from vamu_tasks.errors import TransientError
from vamu_tasks.notify.signing import SIGNATURE_HEADER, SignatureError, verify_signature
from vamu_tasks.notify.transports import DeliveryFailed, WebhookTransport

SECRET = "whsec-shared-between-worker-and-app"
JOB_ID = uuid.UUID("0c6f1a52-3f0e-4d55-9a8e-1b7b3f0f4e21")


@dataclass
class Delivery:
    body: bytes
    signature: str | None
    event_id: str | None
    verified_at: int | None = None
    rejection: SignatureError | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """What the app's webhook endpoint does: verify the raw body's signature, then accept."""

    secret: str = SECRET
    status: int = 204
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""


class _Handler(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        delivery = Delivery(
            body, self.headers.get(SIGNATURE_HEADER), self.headers.get("X-Vamu-Event-Id")
        )
        try:
            delivery.verified_at = verify_signature(body, delivery.signature, receiver.secret)
        except SignatureError as exc:
            delivery.rejection = exc
        receiver.deliveries.append(delivery)
        status = 401 if delivery.rejection is not None else receiver.status
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    server = _ReceiverServer(state)
    host, port = server.server_address[:2]
    state.url = f"http://{host!s}:{port}/hooks/vamu"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def transport(receiver: Receiver) -> Iterator[WebhookTransport]:
    webhook = WebhookTransport(url=receiver.url, secret=SecretStr(SECRET), timeout_s=2.0)
    yield webhook
    webhook.close()


def ready_notification() -> Notification:
    """The notification the runner builds for a finished inspiration job (same each time)."""
    return Notification(
        id=event_id_for(JOB_ID, "inspiration-ready"),
        event="inspiration-ready",
        user_id="u-ada",
        job_id=JOB_ID,
        data={"jobId": str(JOB_ID), "feature": "inspiration", "status": "succeeded"},
    )


def test_a_notification_is_delivered_as_id_event_user_id_and_data_with_a_valid_signature(
    transport: WebhookTransport, receiver: Receiver
) -> None:
    notification = ready_notification()

    transport.send(notification)

    [delivery] = receiver.deliveries
    assert delivery.rejection is None
    assert delivery.verified_at is not None
    assert delivery.json == {
        "id": str(notification.id),
        "event": "inspiration-ready",
        "userId": "u-ada",
        "data": {"jobId": str(JOB_ID), "feature": "inspiration", "status": "succeeded"},
    }


def test_the_id_is_the_notification_id_and_stays_the_same_when_the_notification_is_resent(
    transport: WebhookTransport, receiver: Receiver
) -> None:
    transport.send(ready_notification())
    transport.send(ready_notification())  # a retry rebuilds the same notification

    first, second = receiver.deliveries
    expected = str(event_id_for(JOB_ID, "inspiration-ready"))
    assert first.json["id"] == second.json["id"] == expected
    assert first.event_id == second.event_id == expected
    assert first.rejection is None and second.rejection is None


def test_a_receiver_answering_500_makes_delivery_fail_for_a_retry(
    transport: WebhookTransport, receiver: Receiver
) -> None:
    receiver.status = 500

    with pytest.raises(DeliveryFailed) as caught:
        transport.send(ready_notification())

    assert isinstance(caught.value, TransientError)
    assert caught.value.retryable
    assert "500" in str(caught.value)
    assert len(receiver.deliveries) == 1


def test_an_unreachable_webhook_url_makes_delivery_fail_for_a_retry() -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    webhook = WebhookTransport(
        url=f"http://127.0.0.1:{port}/hooks/vamu", secret=SecretStr(SECRET), timeout_s=1.0
    )
    try:
        with pytest.raises(DeliveryFailed) as caught:
            webhook.send(ready_notification())
    finally:
        webhook.close()

    assert isinstance(caught.value, TransientError)
    assert "unreachable" in str(caught.value)


def test_a_receiver_with_a_different_secret_rejects_the_signature(
    transport: WebhookTransport, receiver: Receiver
) -> None:
    receiver.secret = "whsec-some-other-secret"

    with pytest.raises(DeliveryFailed):
        transport.send(ready_notification())

    [delivery] = receiver.deliveries
    assert isinstance(delivery.rejection, SignatureError)
    assert "does not match" in str(delivery.rejection)
    assert delivery.verified_at is None
    # The same delivery verifies with the right secret: only the secret was wrong.
    assert verify_signature(delivery.body, delivery.signature, SECRET) > 0


def test_a_body_altered_in_transit_fails_verification(
    transport: WebhookTransport, receiver: Receiver
) -> None:
    transport.send(ready_notification())
    [delivery] = receiver.deliveries

    forged = delivery.body.replace(b'"succeeded"', b'"cancelled"')

    assert forged != delivery.body
    with pytest.raises(SignatureError):
        verify_signature(forged, delivery.signature, SECRET)
