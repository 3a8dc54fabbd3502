"""Delivering one outbox notification to each transport that has not had it yet (no Celery)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from vamu_tasks.domain import Notification
from vamu_tasks.errors import TransientError
from vamu_tasks.ports import Transport

log = logging.getLogger(__name__)


class Outbox(Protocol):
    def get_notification(self, event_id: uuid.UUID) -> tuple[Notification, list[str]] | None: ...

    def mark_delivered(self, event_id: uuid.UUID, transport: str) -> None: ...

    def record_delivery_failure(
        self, event_id: uuid.UUID, error: str, retry_in_s: float
    ) -> None: ...


@dataclass(frozen=True)
class DeliveryReport:
    delivered: Sequence[str]
    failed: Mapping[str, str]

    @property
    def complete(self) -> bool:
        return not self.failed


def deliver(
    outbox: Outbox,
    transports: Mapping[str, Transport],
    event_id: uuid.UUID,
    *,
    retry_in_s: float = 30.0,
) -> DeliveryReport:
    """Send to every pending transport; a transport that fails stays pending for a retry."""
    found = outbox.get_notification(event_id)
    if found is None:
        log.warning("notification %s not in the outbox; nothing to send", event_id)
        return DeliveryReport((), {})
    notification, pending = found
    delivered: list[str] = []
    failed: dict[str, str] = {}
    for name in pending:
        transport = transports.get(name)
        if transport is None:
            failed[name] = f"transport {name!r} is not configured in this process"
            continue
        try:
            transport.send(notification)
        except TransientError as exc:
            failed[name] = exc.message
            continue
        outbox.mark_delivered(event_id, name)
        delivered.append(name)
    if failed:
        outbox.record_delivery_failure(
            event_id, "; ".join(f"{k}: {v}" for k, v in failed.items()), retry_in_s
        )
    return DeliveryReport(delivered, failed)
