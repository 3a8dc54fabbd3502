"""The BullMQ side of the contract: refusal reasons NestJS can act on, and job references."""

from __future__ import annotations

from typing import ClassVar, Literal

from vamu_tasks.errors import ErrorKind, PermanentError

RefusalKind = Literal["invalid_job", "unknown_job", "quota_exceeded"]


class Refused(PermanentError):
    """The bridge will not accept this BullMQ job; retrying the same job cannot help."""

    error_kind: ClassVar[ErrorKind] = "invalid_job"
    refusal: ClassVar[RefusalKind] = "invalid_job"

    @property
    def failed_reason(self) -> str:
        """BullMQ's `failedReason`: a machine-readable kind, then what is wrong."""
        return f"{self.refusal}: {self.message}"


class InvalidJobData(Refused):
    refusal = "invalid_job"


class UnknownJob(Refused):
    refusal = "unknown_job"


class QuotaExceededForUser(Refused):
    error_kind = "quota"
    refusal = "quota_exceeded"


def source_ref(queue: str, bullmq_job_id: str, request_id: str | None) -> str:
    """One row per logical request: NestJS's `requestId` if it sent one, else the BullMQ job."""
    if request_id:
        return f"request:{request_id}"
    return f"bullmq:{queue}:{bullmq_job_id}"
