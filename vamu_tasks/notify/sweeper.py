"""The outbox sweep: notifications whose job committed but whose delivery never happened."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Protocol

from vamu_tasks.metrics import NOTIFICATIONS

log = logging.getLogger(__name__)


class SweptOutbox(Protocol):
    def give_up_notifications(self, older_than_s: float) -> int: ...

    def claim_stale_notifications(self, older_than_s: float, limit: int = 100) -> list[uuid.UUID]:
        """Undelivered notifications nobody has tried for a while, claimed for `older_than_s`."""
        ...


def sweep_outbox(
    outbox: SweptOutbox,
    send: Callable[[uuid.UUID], object],
    *,
    stale_after_s: float,
    give_up_after_s: float,
) -> int:
    """One pass: give up what is too old, send again what went stale; how many were sent.

    Safe to run twice at once: each row is claimed (`FOR UPDATE SKIP LOCKED`, its next attempt
    moved forward) in the transaction that finds it, so only one pass sends it; a delivery that
    does arrive twice sends only to the transports still pending.
    """
    given_up = outbox.give_up_notifications(give_up_after_s)
    if given_up:
        NOTIFICATIONS.labels("any", "given_up").inc(given_up)
        log.error(
            "gave up %d notification(s) undelivered for %gs; see notification_outbox.last_error",
            given_up,
            give_up_after_s,
        )
    ids = outbox.claim_stale_notifications(stale_after_s)
    for event_id in ids:
        send(event_id)
    if ids:
        log.info("outbox sweep re-sent %d notification(s)", len(ids))
    return len(ids)
