"""Delivering one outbox notification to each transport that has not had it yet (no Celery)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from vamu_tasks.domain import Delivery
from vamu_tasks.errors import TransientError
from vamu_tasks.metrics import NOTIFICATIONS
from vamu_tasks.ports import Transport

log = logging.getLogger(__name__)


class Outbox(Protocol):
    def delivering(self, event_id: uuid.UUID) -> AbstractContextManager[Delivery | None]:
        """The notification, held for this deliverer alone; None if there is nothing to do."""
        ...


@dataclass(frozen=True)
class DeliveryReport:
    delivered: Sequence[str]
    failed: Mapping[str, str]
    left: Sequence[str] = ()  # pending transports this call was not asked to send to

    @property
    def complete(self) -> bool:
        return not self.failed and not self.left


def deliver(
    outbox: Outbox,
    transports: Mapping[str, Transport],
    event_id: uuid.UUID,
    *,
    retry_in_s: float = 30.0,
    only: Collection[str] | None = None,
) -> DeliveryReport:
    """Send to every pending transport (or those in `only`); a transport that fails stays
    pending for a retry, one left out stays pending for another deliverer."""
    with outbox.delivering(event_id) as delivery:
        if delivery is None:
            log.info(
                "notification %s: delivered, unknown, or being sent by another worker", event_id
            )
            return DeliveryReport((), {})
        delivered: list[str] = []
        failed: dict[str, str] = {}
        left: list[str] = []
        for name in list(delivery.pending):
            if only is not None and name not in only:
                left.append(name)
                continue
            transport = transports.get(name)
            if transport is None:
                failed[name] = f"transport {name!r} is not configured in this process"
                continue
            try:
                transport.send(delivery.notification)
            except TransientError as exc:
                failed[name] = exc.message
                NOTIFICATIONS.labels(name, "failed").inc()
                continue
            NOTIFICATIONS.labels(name, "delivered").inc()
            delivery.mark_delivered(name)
            delivered.append(name)
        if failed:
            delivery.record_failure("; ".join(f"{k}: {v}" for k, v in failed.items()), retry_in_s)
        return DeliveryReport(delivered, failed, left)
