"""The CLI's batch tier options (`--batch`, `--deliver-by`) for `enqueue` and `rerun`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from vamu_tasks.batches.policy import BatchPolicy, batch_policy
from vamu_tasks.settings import Settings

BATCH_HELP = (
    "Run in the provider's half-price batch tier: the result comes within 24 hours "
    "(deliverBy now + 24h unless --deliver-by)."
)
DELIVER_BY_HELP = (
    "Batch tier: the latest time for the result, a date-time with an offset "
    "(2026-12-03T08:00:00Z) or from now in whole minutes, hours or days (90m, 12h, 2d); "
    'implies --batch. Too near to wait for a batch: the job runs now ("status": "queued").'
)


def duration_s(value: str) -> int | None:
    """`90m`, `12h`, `2d` in seconds; None for anything else."""
    units = {"m": 60, "h": 3600, "d": 86400}
    if value[:-1].isdigit() and value[-1:] in units:
        return int(value[:-1]) * units[value[-1]]
    return None


def batch_deadline(batch: bool, deliver_by: str | None) -> datetime | None:
    """The deliverBy of --batch / --deliver-by (None: run now)."""
    if deliver_by is None:
        return datetime.now(UTC) + timedelta(hours=24) if batch else None
    seconds = duration_s(deliver_by)
    if seconds is not None:
        return datetime.now(UTC) + timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(deliver_by)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise click.BadParameter(
            "expected a date-time with an offset (2026-12-03T08:00:00Z) or a duration (12h)",
            param_hint="--deliver-by",
        )
    return when.astimezone(UTC)


def batch_policy_or_exit(settings: Settings) -> BatchPolicy:
    policy = batch_policy(settings)
    if policy is None:
        raise click.ClickException(
            "the batch tier needs a provider with a batch API: set VAMU_LLM_PROVIDER to "
            "openai or anthropic (the offline provider runs every job now)"
        )
    return policy
