"""Operator reruns: a new job linked to the original by `rerun_of` (no Celery here)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from vamu_tasks.batches.policy import BATCHABLE
from vamu_tasks.bridge.contract import request_ref
from vamu_tasks.domain import JobRecord, NewJob
from vamu_tasks.features import FEATURES
from vamu_tasks.ports import JobStore
from vamu_tasks.submit import TaskSender


@dataclass(frozen=True)
class RerunPlan:
    """What a rerun would do: the jobs it reruns, and the ones it skips with why."""

    rerun: list[JobRecord]
    skipped: list[tuple[JobRecord, str]]

    def counts(self) -> Counter[tuple[str, str]]:
        """Jobs to rerun per (feature, error kind)."""
        return Counter((job.feature, job.error_kind or "-") for job in self.rerun)

    @property
    def users(self) -> list[str]:
        return sorted({job.user_id for job in self.rerun})

    @property
    def tokens(self) -> tuple[int, int]:
        """Input and output tokens the originals used: an estimate of what the reruns will."""
        return (
            sum(j.input_tokens or 0 for j in self.rerun),
            sum(j.output_tokens or 0 for j in self.rerun),
        )

    @property
    def cost_usd(self) -> Decimal:
        return sum((j.cost_usd or Decimal(0) for j in self.rerun), Decimal(0))


# Failures that a rerun of the same request meets again: the user, the input or the content
# is the problem, not the moment.
PERMANENT_KINDS = frozenset({"user_not_found", "invalid_job", "content_filter"})


def plan_rerun(
    jobs: Sequence[JobRecord], *, force: bool = False, include_permanent: bool = False
) -> RerunPlan:
    """Jobs still queued or running, or that succeeded, are skipped unless `force`; jobs that
    failed in a way a rerun fails again (`PERMANENT_KINDS`) unless `include_permanent`."""
    rerun: list[JobRecord] = []
    skipped: list[tuple[JobRecord, str]] = []
    for job in jobs:
        if job.status in ("queued", "batched", "running") and not force:
            skipped.append((job, f"still {job.status}; --force to rerun anyway"))
        elif job.status == "succeeded" and not force:
            skipped.append((job, "already succeeded; --force to rerun anyway"))
        elif job.error_kind in PERMANENT_KINDS and not include_permanent:
            skipped.append(
                (
                    job,
                    f"failed as {job.error_kind}, which a rerun meets again; "
                    "--include-permanent to rerun anyway",
                )
            )
        else:
            rerun.append(job)
    return RerunPlan(rerun, skipped)


@dataclass(frozen=True)
class RerunOptions:
    reason: str
    requested_by: str
    notify: bool = True
    provider: str | None = None
    model: str | None = None
    # The batch tier: the reruns may wait until then, at half price (inspiration only).
    deliver_by: datetime | None = None


@dataclass
class RerunReport:
    requeued: list[tuple[JobRecord, JobRecord]] = field(default_factory=list)
    skipped: list[tuple[JobRecord, str]] = field(default_factory=list)


def rerun_request_id(original_id: uuid.UUID, n: int) -> str:
    """The requestId of the n-th rerun (from 1) of a job: its events must not carry the
    original's, which the app has already seen through to the end."""
    return f"rerun-{original_id}-{n}"


def rerun_job(
    store: JobStore, sender: TaskSender, original: JobRecord, options: RerunOptions
) -> JobRecord:
    """Create the rerun's row (the original stays as it was) and send its task.

    Every call is a new rerun, numbered after the original's earlier ones: its requestId's
    source_ref is unique, so the first free number wins even against a concurrent rerun.
    """
    # The original's deliverBy has passed or was met: a rerun waits only if told to.
    base = {k: v for k, v in original.request.items() if k != "deliverBy"}
    deliver_by = options.deliver_by if original.feature in BATCHABLE else None
    if deliver_by is not None:
        base["deliverBy"] = deliver_by.astimezone(UTC).isoformat().replace("+00:00", "Z")
    n = 1
    while True:
        request_id = rerun_request_id(original.id, n)
        job, created = store.create_job(
            NewJob(
                feature=original.feature,
                user_id=original.user_id,
                request={**base, "requestId": request_id},
                source="cli",
                source_ref=request_ref(request_id),
                rerun_of=original.id,
                notify=options.notify,
                rerun_reason=options.reason,
                requested_by=options.requested_by,
                deliver_by=deliver_by,
            )
        )
        if created:
            break
        n += 1
    if job.status == "batched":
        return job  # the batch collector sends it
    # Its own requestId in the task's headers, so its log lines say which rerun they are about.
    headers = {"requestId": request_id}
    spec = FEATURES[job.feature]
    sender.send(spec, job.id, headers, provider=options.provider, model=options.model)
    return job
