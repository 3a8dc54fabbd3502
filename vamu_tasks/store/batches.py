"""`SqlAlchemyBatchStore`: the batch tier's rows: which jobs wait, which batch each went in, and
each result settled once.

Every step that two beats might run at once claims its rows first (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, one writer at a time on SQLite), and a result is settled under the lock of its
`llm_batch_items` row, so a batch polled twice, or again after a worker died half-way through
it, commits and notifies each job once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session

from vamu_tasks.domain import MAX_ERROR_MESSAGE, JobRecord, Notification, Spend
from vamu_tasks.store.models import AiJob, LlmBatch, LlmBatchItem
from vamu_tasks.store.repository import (
    Database,
    add_spend,
    as_utc,
    finish_row,
    to_record,
    utcnow,
)

SettleKind = Literal["commit", "fail", "sync"]
# (job id, feature) of jobs sent down the synchronous path, as the reaper's claims are.
Found = tuple[uuid.UUID, str]


@dataclass(frozen=True)
class Claimed:
    """Waiting jobs claimed for a new batch, not yet sent to the vendor."""

    batch_id: uuid.UUID
    jobs: list[JobRecord]


@dataclass(frozen=True)
class Settlement:
    """What to do with one job's batch result, if the job is still waiting for it."""

    kind: SettleKind
    spend: Spend
    result: Mapping[str, Any] | None = None
    error_kind: str | None = None
    error_message: str | None = None
    notifications: Sequence[Notification] = field(default_factory=tuple)


@dataclass(frozen=True)
class Settled:
    """What settling did: the job's outcome (`discarded` when it had moved on), and the
    notifications written with it."""

    outcome: Literal["committed", "failed", "to_sync", "discarded", "already"]
    notifications: list[uuid.UUID] = field(default_factory=list)


class SqlAlchemyBatchStore:
    def __init__(self, db: Database, *, transports: Sequence[str] = ("log",)) -> None:
        self._session = db.transaction
        self._transports = list(transports)

    # --- collecting ----------------------------------------------------------------------

    def claim_waiting(
        self,
        provider: str,
        model: str,
        *,
        max_jobs: int,
        max_wait_s: float,
        submit_lease_s: float,
    ) -> Claimed | None:
        """Claim up to `max_jobs` waiting jobs for a new batch, once there are `max_jobs` or
        the oldest has waited `max_wait_s`; None when it is not yet time."""
        now = utcnow()
        with self._session() as session:
            rows = list(
                session.scalars(
                    select(AiJob)
                    .where(AiJob.status == "batched", AiJob.batch_id.is_(None))
                    .order_by(AiJob.created_at)
                    .limit(max_jobs)
                    .with_for_update(skip_locked=True)
                )
            )
            if not rows:
                return None
            oldest = as_utc(rows[0].created_at) or now
            if len(rows) < max_jobs and now - oldest < timedelta(seconds=max_wait_s):
                return None
            batch = LlmBatch(
                id=uuid.uuid4(),
                provider=provider,
                model=model,
                status="submitting",
                request_count=len(rows),
                created_at=now,
                # The submit lease: a batch still `submitting` after it was never sent.
                next_poll_at=now + timedelta(seconds=submit_lease_s),
            )
            session.add(batch)
            session.flush()
            for row in rows:
                row.batch_id = batch.id
                session.add(LlmBatchItem(batch_id=batch.id, job_id=row.id))
            return Claimed(batch.id, [to_record(row) for row in rows])

    def leave_batch(self, batch_id: uuid.UUID, job_ids: Sequence[uuid.UUID]) -> None:
        """Take jobs out of a batch not yet sent; they wait for the next one."""
        if not job_ids:
            return
        with self._session() as session:
            session.execute(
                update(AiJob)
                .where(AiJob.id.in_(job_ids), AiJob.batch_id == batch_id)
                .values(batch_id=None)
            )
            session.execute(
                delete(LlmBatchItem).where(
                    LlmBatchItem.batch_id == batch_id, LlmBatchItem.job_id.in_(job_ids)
                )
            )
            batch = session.get(LlmBatch, batch_id)
            if batch is not None:
                batch.request_count = max(batch.request_count - len(job_ids), 0)

    def mark_submitted(self, batch_id: uuid.UUID, vendor_batch_id: str, poll_in_s: float) -> None:
        now = utcnow()
        with self._session() as session:
            batch = session.get(LlmBatch, batch_id, with_for_update=True)
            if batch is None:
                raise LookupError(f"No llm_batches row {batch_id}")
            batch.status = "submitted"
            batch.vendor_batch_id = vendor_batch_id
            batch.submitted_at = now
            batch.next_poll_at = now + timedelta(seconds=poll_in_s)

    def abandon(self, batch_id: uuid.UUID, reason: str) -> None:
        """A batch that never reached the vendor: its jobs wait for the next one."""
        with self._session() as session:
            batch = session.get(LlmBatch, batch_id, with_for_update=True)
            if batch is None or batch.status != "submitting":
                return
            self._abandon(session, batch, reason)

    def abandon_stale_submits(self) -> int:
        """Batches left `submitting` by a process that died before recording the vendor's id.

        Their jobs are collected again. Had the vendor taken the batch, its results are never
        read: paid for once, committed by nobody (the window is a few milliseconds wide).
        """
        with self._session() as session:
            stale = list(
                session.scalars(
                    select(LlmBatch)
                    .where(LlmBatch.status == "submitting", LlmBatch.next_poll_at < utcnow())
                    .with_for_update(skip_locked=True)
                )
            )
            for batch in stale:
                self._abandon(session, batch, "the process sending it stopped before it was sent")
            return len(stale)

    def _abandon(self, session: Session, batch: LlmBatch, reason: str) -> None:
        batch.status = "abandoned"
        batch.last_error = reason[:MAX_ERROR_MESSAGE]
        batch.ended_at = utcnow()
        session.execute(
            update(AiJob)
            .where(AiJob.batch_id == batch.id, AiJob.status == "batched")
            .values(batch_id=None)
        )
        session.execute(
            update(LlmBatchItem)
            .where(LlmBatchItem.batch_id == batch.id, LlmBatchItem.settled_at.is_(None))
            .values(outcome="unsent", settled_at=utcnow())
        )

    # --- the synchronous path ------------------------------------------------------------

    def due_for_sync(self, margin_s: float, hold_s: float, limit: int = 500) -> list[Found]:
        """Batched jobs whose `deliverBy` is `margin_s` away or less, made `queued` to run now.

        A batch they are in keeps running: its result for them is discarded when it comes.
        """
        due = AiJob.deliver_by <= utcnow() + timedelta(seconds=margin_s)
        return self._move_to_sync(hold_s, due, order_by=AiJob.deliver_by, limit=limit)

    def all_to_sync(self, hold_s: float, limit: int = 500) -> list[Found]:
        """Every batched job made `queued` to run now (a deployment with no batch API)."""
        return self._move_to_sync(hold_s, order_by=AiJob.created_at, limit=limit)

    def to_sync(self, job_ids: Sequence[uuid.UUID], hold_s: float) -> list[Found]:
        """These jobs, if still batched, made `queued` to run now; the ones moved."""
        if not job_ids:
            return []
        return self._move_to_sync(hold_s, AiJob.id.in_(job_ids))

    def _move_to_sync(
        self,
        hold_s: float,
        *where: ColumnElement[bool],
        order_by: Any = None,
        limit: int | None = None,
    ) -> list[Found]:
        """The batched jobs matching `where` that no one else holds, sent down the synchronous
        path (`_to_sync`); the ones moved."""
        query = select(AiJob).where(AiJob.status == "batched", *where)
        if order_by is not None:
            query = query.order_by(order_by)
        with self._session() as session:
            rows = list(session.scalars(query.limit(limit).with_for_update(skip_locked=True)))
            for row in rows:
                _to_sync(row, hold_s)
            return [(row.id, row.feature) for row in rows]

    # --- polling and settling ------------------------------------------------------------

    def claim_polls(self, lease_s: float, limit: int = 20) -> list[tuple[uuid.UUID, str]]:
        """Sent batches due for a poll, each held for `lease_s` by this poller."""
        now = utcnow()
        with self._session() as session:
            batches = list(
                session.scalars(
                    select(LlmBatch)
                    .where(LlmBatch.status == "submitted", LlmBatch.next_poll_at <= now)
                    .order_by(LlmBatch.next_poll_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            for batch in batches:
                batch.next_poll_at = now + timedelta(seconds=lease_s)
            return [(b.id, b.vendor_batch_id or "") for b in batches]

    def poll_later(self, batch_id: uuid.UUID, vendor_status: str, poll_in_s: float) -> None:
        with self._session() as session:
            batch = session.get(LlmBatch, batch_id, with_for_update=True)
            if batch is not None and batch.status == "submitted":
                batch.vendor_status = vendor_status
                batch.next_poll_at = utcnow() + timedelta(seconds=poll_in_s)

    def settle(
        self, batch_id: uuid.UUID, job_id: uuid.UUID, settlement: Settlement, hold_s: float
    ) -> Settled:
        """Apply one job's result, once: to the job if it still waits for this batch, else
        only its cost (the job ran synchronously, or was cancelled, meanwhile)."""
        with self._session() as session:
            item = session.get(LlmBatchItem, (batch_id, job_id), with_for_update=True)
            if item is None or item.settled_at is not None:
                return Settled("already")
            row = session.get(AiJob, job_id, with_for_update=True)
            assert row is not None  # the item's foreign key
            item.settled_at = utcnow()
            if row.status != "batched" or row.batch_id != batch_id:
                add_spend(row, settlement.spend)
                item.outcome = "discarded"
                return Settled("discarded")
            notes = list(settlement.notifications)
            if settlement.kind in ("commit", "fail"):
                # The batch's call was this job's attempt, started when the batch was sent.
                batch = session.get(LlmBatch, batch_id)
                row.attempts += 1
                row.started_at = row.started_at or (batch.submitted_at if batch else None)
            if settlement.kind == "commit":
                values: dict[str, Any] = {
                    "status": "succeeded",
                    "result": dict(settlement.result or {}),
                    "error_kind": None,
                    "error_message": None,
                }
                finish_row(session, row, values, settlement.spend, notes, self._transports)
                item.outcome = "committed"
                return Settled("committed", self._ids(notes))
            if settlement.kind == "fail":
                values = {
                    "status": "failed",
                    "error_kind": settlement.error_kind,
                    "error_message": (settlement.error_message or "")[:MAX_ERROR_MESSAGE],
                }
                finish_row(session, row, values, settlement.spend, notes, self._transports)
                item.outcome = "failed"
                return Settled("failed", self._ids(notes))
            add_spend(row, settlement.spend)
            if settlement.error_kind:
                row.error_kind = settlement.error_kind
                row.error_message = (settlement.error_message or "")[:MAX_ERROR_MESSAGE]
            _to_sync(row, hold_s)
            item.outcome = "to_sync"
            return Settled("to_sync")

    def end(self, batch_id: uuid.UUID, vendor_status: str, hold_s: float) -> list[Found]:
        """The batch has ended and its results are settled: the jobs it left without one (it
        expired, was cancelled, or lost them) go down the synchronous path; their ids."""
        now = utcnow()
        with self._session() as session:
            batch = session.get(LlmBatch, batch_id, with_for_update=True)
            if batch is None:
                return []
            batch.status = "ended"
            batch.vendor_status = vendor_status
            batch.ended_at = batch.ended_at or now
            batch.next_poll_at = None
            items = list(
                session.scalars(
                    select(LlmBatchItem)
                    .where(LlmBatchItem.batch_id == batch_id, LlmBatchItem.settled_at.is_(None))
                    .with_for_update()
                )
            )
            moved: list[Found] = []
            for item in items:
                item.settled_at = now
                item.outcome = "unfinished"
                row = session.get(AiJob, item.job_id, with_for_update=True)
                if row is not None and row.status == "batched" and row.batch_id == batch_id:
                    _to_sync(row, hold_s)
                    moved.append((row.id, row.feature))
            return moved

    def batches_out(self) -> list[tuple[uuid.UUID, str, str, datetime | None]]:
        """Batches sent and not ended: id, vendor id, vendor status, when sent (for operators)."""
        with self._session() as session:
            rows = session.execute(
                select(
                    LlmBatch.id,
                    LlmBatch.vendor_batch_id,
                    LlmBatch.vendor_status,
                    LlmBatch.submitted_at,
                ).where(LlmBatch.status == "submitted")
            ).all()
            return [(r[0], r[1] or "", r[2] or "", as_utc(r[3])) for r in rows]

    def _ids(self, notes: Sequence[Notification]) -> list[uuid.UUID]:
        return [note.id for note in notes] if self._transports else []


def _to_sync(row: AiJob, hold_s: float) -> None:
    """Send a batched job down the synchronous path: `queued`, never started. `retry_at` keeps
    the reaper's stale-queued check off it until its task had time to arrive; if that task
    is lost, the overdue-retry check sends it again."""
    row.status = "queued"
    row.retry_at = utcnow() + timedelta(seconds=hold_s)
