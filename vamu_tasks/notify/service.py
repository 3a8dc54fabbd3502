"""Delivering one outbox notification to each transport that has not had it yet (no Celery)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from vamu_tasks.domain import Delivery, Notification
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

    @property
    def error(self) -> str:
        """The failures, as one `last_error`."""
        return "; ".join(f"{name}: {why}" for name, why in self.failed.items())


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
        report = send_each(transports, delivery.notification, delivery.pending, only)
        for name in report.delivered:
            delivery.mark_delivered(name)
        if report.failed:
            delivery.record_failure(report.error, retry_in_s)
        return report


def send_each(
    transports: Mapping[str, Transport],
    notification: Notification,
    pending: Sequence[str],
    only: Collection[str] | None = None,
) -> DeliveryReport:
    """Send one notification to each pending transport in `only` (all of them without it),
    counting each outcome; what the caller records is its own business."""
    delivered: list[str] = []
    failed: dict[str, str] = {}
    left: list[str] = []
    for name in list(pending):
        if only is not None and name not in only:
            left.append(name)
            continue
        transport = transports.get(name)
        if transport is None:
            failed[name] = f"transport {name!r} is not configured in this process"
            continue
        try:
            transport.send(notification)
        except TransientError as exc:
            failed[name] = exc.message
            NOTIFICATIONS.labels(name, "failed").inc()
            continue
        NOTIFICATIONS.labels(name, "delivered").inc()
        delivered.append(name)
    return DeliveryReport(delivered, failed, left)


class FreshOutbox(Protocol):
    @property
    def transports(self) -> list[str]:
        """The transports every outbox row it writes is pending for."""
        ...

    def mark_sent(self, event_ids: Sequence[uuid.UUID], transports: Sequence[str]) -> None: ...

    def record_delivery_failure(
        self, event_id: uuid.UUID, error: str, retry_in_s: float
    ) -> None: ...


def deliver_fresh(
    outbox: FreshOutbox,
    transports: Mapping[str, Transport],
    notifications: Sequence[Notification],
    *,
    only: Collection[str],
    retry_in_s: float = 30.0,
) -> list[uuid.UUID]:
    """Send notifications this process has just committed to the transports in `only`, from
    the notifications in hand, and record it in one UPDATE: no read, no row lock. Returns the
    ids still pending somewhere (a transport left out, or one that failed) for the notify queue.

    Nobody else delivers a notification this fresh: the sweeper leaves it for
    VAMU_OUTBOX_STALE_AFTER_S and the notify task is sent after this returns. A redelivered copy
    of the job's task could deliver it meanwhile (through `deliver`); the event then goes out
    twice with the same id, which at-least-once delivery allows.
    """
    pending = outbox.transports
    left: list[uuid.UUID] = []
    sent: dict[tuple[str, ...], list[uuid.UUID]] = {}
    for note in notifications:
        report = send_each(transports, note, pending, only)
        sent.setdefault(tuple(report.delivered), []).append(note.id)
        if report.failed:
            outbox.record_delivery_failure(note.id, report.error, retry_in_s)
        if not report.complete:
            left.append(note.id)
    for names, ids in sent.items():
        outbox.mark_sent(ids, names)
    return left
