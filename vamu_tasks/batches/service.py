"""The batch tier's work, one pass at a time: collect waiting jobs into vendor batches, poll the
batches out, settle each result through the feature's own validation (no Celery here).

`tick` is what the housekeeping leader (a notify worker) runs every
`VAMU_BATCH_POLL_INTERVAL_S`. Each step claims its rows first, so two passes running at once do
the work once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from vamu_tasks.domain import BatchAnswer, BatchRequest, JobFilter, JobRecord, Spend, Usage
from vamu_tasks.errors import BudgetExceeded, ErrorKind, PermanentError, TransientError, VamuError
from vamu_tasks.features import FEATURES
from vamu_tasks.inspiration.service import READY_EVENT, accept_answer, batch_llm_request
from vamu_tasks.jobs import fail_job, failure_notifications, ready_notification
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.ports import BatchLLM, JobStore, UserContextClient
from vamu_tasks.store.batches import Found, Settlement, SqlAlchemyBatchStore
from vamu_tasks.submit import TaskSender

log = logging.getLogger(__name__)

# Batches a single pass may form: a backlog larger than this is sent over the next passes.
MAX_BATCHES_PER_TICK = 5


@dataclass(frozen=True)
class BatchConfig:
    max_jobs: int
    max_wait_s: float
    poll_interval_s: float
    sync_margin_s: float
    max_output_tokens: int
    # How long a job sent down the synchronous path is left to its task before the reaper
    # may send it again.
    hold_s: float
    # A `submitting` batch older than this was never sent (its sender died).
    submit_lease_s: float = 300.0

    @property
    def poll_lease_s(self) -> float:
        """How long a poll holds its batch: a poller that died is replaced after this. Another
        pass settling the same batch meanwhile would be harmless (each answer settles once)."""
        return max(10.0, 2 * self.poll_interval_s)


@dataclass
class BatchDeps:
    batches: SqlAlchemyBatchStore
    jobs: JobStore
    api: BatchLLM
    context: UserContextClient
    sender: TaskSender
    # Deliver (or queue) the notifications just committed.
    notify: Callable[[list[uuid.UUID]], None]
    config: BatchConfig
    # The daily spend budget: is the user over it, and count a cost already incurred.
    over_budget: Callable[[str], str | None] = lambda _user: None
    charge: Callable[[str, str, Decimal], None] = lambda _user, _provider, _cost: None


@dataclass
class TickReport:
    to_sync: int = 0
    submitted: list[str] = field(default_factory=list)
    jobs_submitted: int = 0
    committed: int = 0
    failed: int = 0
    discarded: int = 0
    # Each answer settled: (provider, model, usage), for the token and cost metrics.
    usage: list[tuple[str, str, Usage]] = field(default_factory=list)
    # Each job the pass ended: (feature, status, error kind), for the job metrics.
    finished: list[tuple[str, str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        done = self.to_sync or self.submitted or self.committed or self.failed or self.discarded
        return bool(done)


def tick(deps: BatchDeps) -> TickReport:
    """One pass: the due jobs to the synchronous path, new batches out, ended ones settled."""
    report = TickReport()
    deps.batches.abandon_stale_submits()
    due = deps.batches.due_for_sync(deps.config.sync_margin_s, deps.config.hold_s)
    report.to_sync += send_now(deps.sender, due)
    for _ in range(MAX_BATCHES_PER_TICK):
        if not collect(deps, report):
            break
    poll(deps, report)
    return report


def collect(deps: BatchDeps, report: TickReport) -> bool:
    """Send one batch of waiting jobs, if it is time; whether one was formed."""
    cfg = deps.config
    claimed = deps.batches.claim_waiting(
        deps.api.name,
        deps.api.model,
        max_jobs=cfg.max_jobs,
        max_wait_s=cfg.max_wait_s,
        submit_lease_s=cfg.submit_lease_s,
    )
    if claimed is None:
        return False
    requests: list[BatchRequest] = []
    later: list[uuid.UUID] = []
    notes: list[uuid.UUID] = []
    for job in claimed.jobs:
        try:
            over = deps.over_budget(job.user_id)
            if over is not None:
                raise BudgetExceeded(over)
            llm_request = batch_llm_request(job.request, deps.context, cfg.max_output_tokens)
        except TransientError as exc:
            log.warning("batched job %s: %s; it waits for the next batch", job.id, exc.message)
            later.append(job.id)
            continue
        except PermanentError as exc:
            # As the synchronous job would: an unknown user or a spent budget fails it.
            notes += fail_job(deps.jobs, job, exc.error_kind, exc.message).notifications
            report.failed += 1
            report.finished.append((job.feature, "failed", exc.error_kind))
            continue
        requests.append(BatchRequest(str(job.id), llm_request))
    deps.batches.leave_batch(claimed.batch_id, later)
    deps.notify(notes)
    if not requests:
        deps.batches.abandon(claimed.batch_id, "no job left to send")
        # Jobs left for later would be claimed again at once: stop until the next pass.
        return not later
    try:
        vendor_id = deps.api.submit(requests)
    except TransientError as exc:
        log.warning("could not send a batch of %d job(s): %s; retrying", len(requests), exc)
        deps.batches.abandon(claimed.batch_id, exc.message)
        return False
    except VamuError as exc:
        # The vendor refuses the batch itself: each job runs on its own, where it gets its own
        # answer (or its own error) rather than being collected again for ever.
        log.error("the vendor refused a batch of %d job(s): %s", len(requests), exc)
        deps.batches.abandon(claimed.batch_id, exc.message)
        moved = deps.batches.to_sync([uuid.UUID(r.custom_id) for r in requests], cfg.hold_s)
        report.to_sync += send_now(deps.sender, moved)
        return False
    deps.batches.mark_submitted(claimed.batch_id, vendor_id, cfg.poll_interval_s)
    report.submitted.append(vendor_id)
    report.jobs_submitted += len(requests)
    log.info("sent %d job(s) to %s as batch %s", len(requests), deps.api.name, vendor_id)
    return True


def poll(deps: BatchDeps, report: TickReport) -> None:
    """Read the batches due for a poll; settle the ended ones."""
    cfg = deps.config
    for batch_id, vendor_id in deps.batches.claim_polls(lease_s=cfg.poll_lease_s):
        try:
            state = deps.api.state(vendor_id)
            if not state.ended:
                deps.batches.poll_later(batch_id, state.vendor_status, cfg.poll_interval_s)
                continue
            answers = list(deps.api.answers(vendor_id))
        except VamuError as exc:
            log.warning("could not read batch %s: %s; polling again later", vendor_id, exc)
            deps.batches.poll_later(batch_id, "unreadable", cfg.poll_interval_s)
            continue
        before = (report.committed, report.failed, report.to_sync, report.discarded)
        # The batch's rows in one read, not one per answer.
        pairs = [(answer, _job_id(answer)) for answer in answers]
        ids = tuple(job_id for _, job_id in pairs if job_id is not None)
        jobs = {job.id: job for job in deps.jobs.list_jobs(JobFilter(ids, limit=len(ids) or 1))}
        for answer, job_id in pairs:
            job = jobs.get(job_id) if job_id is not None else None
            if job is not None:
                settle_answer(deps, batch_id, answer, job, report)
        moved = deps.batches.end(batch_id, state.vendor_status, cfg.hold_s)
        report.to_sync += send_now(deps.sender, moved)
        after = (report.committed, report.failed, report.to_sync, report.discarded)
        committed, failed, to_sync, discarded = (b - a for a, b in zip(before, after, strict=True))
        log.info(
            "batch %s %s: %d committed, %d failed, %d to run now, %d late result(s) discarded",
            vendor_id,
            state.vendor_status,
            committed,
            failed,
            to_sync,
            discarded,
        )


def _job_id(answer: BatchAnswer) -> uuid.UUID | None:
    try:
        return uuid.UUID(answer.custom_id)
    except ValueError:
        log.error("batch answer with a custom_id that is no job id: %r", answer.custom_id)
        return None


def settle_answer(
    deps: BatchDeps, batch_id: uuid.UUID, answer: BatchAnswer, job: JobRecord, report: TickReport
) -> None:
    """One job's answer: committed as the synchronous job's would be, failed with the same
    error kind, or sent down the synchronous path (a transient error, an answer that needs the
    repair turn, a request that never ran); discarded, cost kept, if the job moved on."""
    job_id = job.id
    meter = SpendMeter()
    if answer.result is not None:
        meter.record_usage(
            answer.result.provider, answer.result.model, answer.result.usage, batch=True
        )
    settlement = _settlement(job, answer, meter.spend)
    settled = deps.batches.settle(batch_id, job_id, settlement, deps.config.hold_s)
    if settled.outcome == "already":
        return
    if answer.result is not None:
        result = answer.result
        report.usage.append((result.provider, result.model, result.usage))
    spend = meter.spend
    if spend.cost_usd and spend.provider:
        deps.charge(job.user_id, spend.provider, spend.cost_usd)
    if settled.outcome == "committed":
        report.committed += 1
        report.finished.append((job.feature, "succeeded", ""))
    elif settled.outcome == "failed":
        report.failed += 1
        report.finished.append((job.feature, "failed", settlement.error_kind or ""))
    elif settled.outcome == "discarded":
        report.discarded += 1
    elif settled.outcome == "to_sync":
        report.to_sync += send_now(deps.sender, [(job_id, job.feature)])
    deps.notify(settled.notifications)


def _settlement(job: JobRecord, answer: BatchAnswer, spend: Spend) -> Settlement:
    if answer.result is not None:
        accepted = accept_answer(job.request, answer.result)
        if isinstance(accepted, str):
            # The synchronous path sends the answer back once for repair; a batch cannot.
            return Settlement("sync", spend, error_kind="schema_invalid", error_message=accepted)
        note = ready_notification(job, READY_EVENT) if job.notify else None
        result = accepted.model_dump(mode="json", exclude_none=True)
        return Settlement("commit", spend, result=result, notifications=[note] if note else [])
    if isinstance(answer.error, PermanentError):
        kind: ErrorKind = answer.error.error_kind
        notes = failure_notifications(job, kind, "failed")
        message = answer.error.message
        return Settlement(
            "fail", spend, error_kind=kind, error_message=message, notifications=notes
        )
    if isinstance(answer.error, VamuError):
        return Settlement(
            "sync", spend, error_kind=answer.error.error_kind, error_message=answer.error.message
        )
    return Settlement("sync", spend)


def run_all_now(batches: SqlAlchemyBatchStore, sender: TaskSender, hold_s: float) -> int:
    """No batch API here (the offline provider): every batched job runs now rather than wait
    past its `deliverBy` for a tier that will never take it; how many were sent."""
    moved = batches.all_to_sync(hold_s)
    if moved:
        log.warning(
            "%d batched job(s) sent to run now: this deployment's provider has no batch API "
            "(set VAMU_LLM_PROVIDER to openai or anthropic for the batch tier)",
            len(moved),
        )
    return send_now(sender, moved)


def send_now(sender: TaskSender, found: Sequence[Found]) -> int:
    """Send the tasks of jobs just made `queued`; a send that fails is the reaper's (the job's
    `retry_at` makes it overdue). How many were made to run now."""
    for job_id, feature in found:
        try:
            sender.send(FEATURES[feature], job_id)  # type: ignore[index]
        except Exception:
            log.exception("could not send job %s; the reaper will", job_id)
    return len(found)
