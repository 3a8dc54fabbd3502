"""The backlog the job rows show: queued jobs per feature, undelivered notifications.

Read by the notify worker's `/metrics` at each scrape (`vamu_tasks.metrics.BacklogCollector`).
Two small queries, each answered from an index on the rows still open:

- `ai_jobs WHERE status = 'queued'` (`ix_ai_jobs_status_created`), grouped by feature: work
  proportional to the queued rows, not to the table;
- `notification_outbox WHERE delivered_at IS NULL` (`ix_outbox_pending`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Select, and_, case, create_engine, func, select
from sqlalchemy.engine import make_url

from vamu_tasks.store.models import AiJob, NotificationOutbox
from vamu_tasks.store.repository import GIVEN_UP, make_engine

# A scrape waits for these queries: bound them well inside Prometheus's 10 s scrape timeout.
STATEMENT_TIMEOUT_MS = 2000
CONNECT_TIMEOUT_S = 2


@dataclass(frozen=True)
class Backlog:
    # feature -> job rows with status queued (new ones, and retries waiting out their countdown)
    queued: dict[str, int]
    # feature -> when the longest-waiting queued job began to wait for a worker: a job never
    # started since it was created, a retry since its countdown ends (a time still ahead while
    # it counts down: such a job is not waiting for a worker yet).
    oldest_waiting_since: dict[str, datetime]
    outbox_pending: int  # undelivered notifications the sweeper still sends
    outbox_given_up: int  # undelivered notifications given up (`notifications resend`)
    outbox_oldest_pending_since: datetime | None


def backlog_engine(url: str) -> Engine:
    """An engine of its own for the scrapes: one connection, and no query or connect that
    outlasts a scrape (a slow database shows as `vamu_store_up 0`, not as a hung scrape)."""
    if url.startswith("sqlite"):
        return make_engine(url, pool_size=1)
    parsed = make_url(url)
    return create_engine(
        parsed,
        pool_size=1,
        max_overflow=1,
        pool_timeout=CONNECT_TIMEOUT_S,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            "application_name": "vamu-metrics",
        },
    )


def backlog_queries() -> tuple[Select[str, int, Any], Select[int, int, Any]]:
    """The two queries: queued jobs per feature, and the undelivered notifications."""
    retry_due = and_(AiJob.attempts > 0, AiJob.retry_at.is_not(None))
    waiting_since = case((retry_due, AiJob.retry_at), else_=AiJob.created_at)
    jobs = (
        select(
            AiJob.feature,
            func.count(),
            func.min(waiting_since),
        )
        .where(AiJob.status == "queued")
        .group_by(AiJob.feature)
    )
    pending = NotificationOutbox.next_attempt_at < GIVEN_UP
    outbox = select(
        func.count(case((pending, 1))),
        func.count(case((~pending, 1))),
        func.min(case((pending, NotificationOutbox.created_at))),
    ).where(NotificationOutbox.delivered_at.is_(None))
    return jobs, outbox


def read_backlog(engine: Engine) -> Backlog:
    jobs, outbox = backlog_queries()
    with engine.connect() as conn:
        rows = conn.execute(jobs).all()
        pending_n, given_up_n, oldest_pending = conn.execute(outbox).one()
    return Backlog(
        queued={feature: int(n) for feature, n, _ in rows},
        oldest_waiting_since={
            feature: _utc(since) for feature, _, since in rows if since is not None
        },
        outbox_pending=int(pending_n),
        outbox_given_up=int(given_up_n),
        outbox_oldest_pending_since=_utc(oldest_pending) if oldest_pending else None,
    )


def _utc(value: datetime) -> datetime:
    # SQLite keeps no zone; every timestamp written is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)
