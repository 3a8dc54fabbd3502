"""The BullMQ side of the contract: return values, failure reasons NestJS can act on, job refs.

Every BullMQ job the bridge fails gets a `failedReason` of one form, which NestJS parses:

    <kind>: <message>[ (job <job id>)]

`kind` is a `FailedReasonKind`; `message` is free text, possibly empty, possibly with
parentheses and newlines; the ` (job <uuid>)` suffix is there when the failure is about a job
row (a sync job's end or timeout), and is always last. A refused job has no row.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, cast, get_args

from pydantic import BaseModel, ConfigDict, WithJsonSchema

from vamu_tasks.errors import ERROR_KINDS, ErrorKind, PermanentError

BridgeRefusalKind = Literal["invalid_job", "unknown_job", "quota_exceeded", "budget_exceeded"]
# The kinds a failedReason can start with: a refusal, the job row's error kind (sync queue;
# also `internal` when the bridge cannot reach its database, broker or Redis), or the sync
# queue's hold running out.
FailedReasonKind = Literal[ErrorKind, BridgeRefusalKind, "sync_timeout"]
FAILED_REASON_KINDS: tuple[str, ...] = tuple(
    dict.fromkeys([*ERROR_KINDS, *get_args(BridgeRefusalKind), "sync_timeout"])
)

_FAILED_REASON = re.compile(
    r"(?P<kind>[a-z_]+): (?P<message>.*?)"
    r"(?: \(job (?P<job_id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\))?",
    re.DOTALL,
)


class FailedReason(NamedTuple):
    kind: FailedReasonKind
    message: str
    job_id: uuid.UUID | None


def failed_reason(kind: FailedReasonKind, message: str, job_id: uuid.UUID | None = None) -> str:
    """BullMQ's `failedReason` for a job the bridge fails: `<kind>: <message>[ (job <id>)]`."""
    suffix = f" (job {job_id})" if job_id is not None else ""
    return f"{kind}: {message}{suffix}"


def parse_failed_reason(text: str) -> FailedReason:
    """The parts of a `failed_reason`; ValueError for text of another form (BullMQ's own)."""
    match = _FAILED_REASON.fullmatch(text)
    if match is None or match["kind"] not in FAILED_REASON_KINDS:
        raise ValueError(f"not a vamu-tasks failedReason: {text[:80]!r}")
    job_id = uuid.UUID(match["job_id"]) if match["job_id"] else None
    return FailedReason(cast(FailedReasonKind, match["kind"]), match["message"], job_id)


class Refused(PermanentError):
    """The bridge will not accept this BullMQ job; retrying the same job cannot help."""

    error_kind: ClassVar[ErrorKind] = "invalid_job"
    refusal: ClassVar[BridgeRefusalKind] = "invalid_job"

    @property
    def failed_reason(self) -> str:
        """BullMQ's `failedReason`. A refused job has no row, hence no `(job …)`."""
        return failed_reason(self.refusal, self.message)


class InvalidJobData(Refused):
    refusal = "invalid_job"


class UnknownJob(Refused):
    refusal = "unknown_job"


class QuotaExceededForUser(Refused):
    error_kind = "quota"
    refusal = "quota_exceeded"


class BudgetExceededForUser(Refused):
    error_kind = "budget_exceeded"
    refusal = "budget_exceeded"


class AcceptedJob(BaseModel):
    """A `vamu-ai` job's return value: the job row it became, and the Celery task sent for it."""

    model_config = ConfigDict(extra="forbid")

    jobId: uuid.UUID
    # null when the job was already running or had ended: no task was sent this time.
    celeryTaskId: str | None


# The stored result of whichever job it was; the contracts file names the three shapes.
_ANY_RESULT = WithJsonSchema(
    {
        "anyOf": [
            {"$ref": "#/$defs/InspirationResult"},
            {"$ref": "#/$defs/ChatReplyResult"},
            {"$ref": "#/$defs/AgentResult"},
        ]
    }
)


class SyncJobResult(AcceptedJob):
    """A `vamu-ai-sync` job's return value: the accepted job and its result once it succeeded."""

    status: Literal["succeeded"]
    result: Annotated[dict[str, Any], _ANY_RESULT]


def source_ref(queue: str, bullmq_job_id: str, request_id: str | None) -> str:
    """One row per logical request: NestJS's `requestId` if it sent one, else the BullMQ job."""
    if request_id:
        return request_ref(request_id)
    return f"bullmq:{queue}:{bullmq_job_id}"


def request_ref(request_id: str) -> str:
    """The `source_ref` of the row a `requestId` belongs to (unique per source)."""
    return f"request:{request_id}"
