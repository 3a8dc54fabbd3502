"""Which accepted jobs wait for a vendor batch instead of running now."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from vamu_tasks.domain import Feature
from vamu_tasks.settings import Settings

# Chat replies are streamed to a waiting user and agent runs call tools step by step: neither
# fits a request that comes back hours later. Only "Inspire me" is batched.
BATCHABLE: frozenset[Feature] = frozenset({"inspiration"})
# The providers with a batch API (the offline one runs every job now).
BATCH_PROVIDERS = frozenset({"openai", "anthropic"})


@dataclass(frozen=True)
class BatchPolicy:
    # A job whose `deliverBy` is this near (or past) runs now.
    sync_margin_s: float

    def deliver_by(
        self, feature: Feature, request: Mapping[str, Any], now: datetime | None = None
    ) -> datetime | None:
        """The job's `deliverBy` if it should wait for a batch, else None (run it now)."""
        raw = request.get("deliverBy")
        if feature not in BATCHABLE or not isinstance(raw, str):
            return None
        when = datetime.fromisoformat(raw)
        if when - (now or datetime.now(UTC)) <= timedelta(seconds=self.sync_margin_s):
            return None
        return when


def batch_policy(settings: Settings) -> BatchPolicy | None:
    """The policy for this deployment; None when its provider has no batch API."""
    with warnings.catch_warnings():
        # An unconfigured deployment is offline: that answers the question, no warning needed.
        warnings.simplefilter("ignore", UserWarning)
        name = settings.provider_name()
    if name not in BATCH_PROVIDERS:
        return None
    return BatchPolicy(settings.batch_sync_margin_s)
