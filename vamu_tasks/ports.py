"""The ports the use cases depend on: `typing.Protocol`s that adapters and fakes match by shape."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from vamu_tasks.domain import (
    AgentStep,
    BatchAnswer,
    BatchRequest,
    BatchState,
    ChatChunk,
    ChatMessageRecord,
    ChatRestart,
    FinishReason,
    JobFilter,
    JobRecord,
    LLMRequest,
    LLMResult,
    NewJob,
    Notification,
    Spend,
    StreamEvent,
    ToolsRequest,
    ToolTurnResult,
    UserContext,
)


class LLMProvider(Protocol):
    """A chat model behind one vendor's API."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    def complete(self, request: LLMRequest) -> LLMResult:
        """Run one request; raise a `VamuError` subclass for every failure."""
        ...

    def complete_with_tools(self, request: ToolsRequest) -> ToolTurnResult:
        """One model step with tools offered; the answer may ask for tool calls."""
        ...

    def stream(self, request: LLMRequest) -> Iterator[StreamEvent]:
        """Yield `TextDelta`s as they arrive, then one `LLMResult`.

        A stream that breaks or ends without a stop reason raises `StreamInterrupted`; it never
        ends quietly with a partial answer.
        """
        ...


class UserContextClient(Protocol):
    """Reads a user's profile and recent activity (the NestJS internal API)."""

    def get_context(self, user_id: str) -> UserContext:
        """Raise `UserNotFound` for an unknown user, `UpstreamApiError` when the API fails."""
        ...


class BrokerInventory(Protocol):
    """What the broker holds: lets the reaper tell a lost task message from a waiting one."""

    def task_ids(self, queues: Collection[str]) -> set[str] | None:
        """Ids of the task messages waiting in `queues` or taken and not yet acknowledged;
        None when the broker cannot say (or it would cost too much to ask)."""
        ...


class JobStore(Protocol):
    """The `ai_jobs` table and the notification outbox written in the same transactions."""

    def create_job(self, job: NewJob) -> tuple[JobRecord, bool]:
        """Insert the job, or return the existing one with the same (source, source_ref)."""
        ...

    def get_job(self, job_id: uuid.UUID) -> JobRecord | None: ...

    def find_job(self, source: str, source_ref: str) -> JobRecord | None:
        """The job created from this source and reference, if any."""
        ...

    def start_attempt(
        self, job_id: uuid.UUID, owner: str | None = None, lease_s: float = 0.0
    ) -> JobRecord:
        """Mark a non-terminal job running and count the attempt; return terminal jobs unchanged.

        With an `owner`, take the job's lease for `lease_s`, or raise `LeaseHeld` when another
        owner's lease is still live.
        """
        ...

    def renew_leases(self, held: Sequence[tuple[uuid.UUID, str]], lease_s: float) -> None:
        """Extend each (job, owner) lease that this owner still holds."""
        ...

    def reap(
        self, grace_s: float, limit: int = 200, stale_queued_s: float | None = None
    ) -> list[tuple[uuid.UUID, str]]:
        """(job id, feature) of running jobs whose lease ran out, of overdue retries, and (with
        `stale_queued_s`) of jobs queued that long without ever starting."""
        ...

    def unstarted_jobs(self, older_than_s: float, limit: int = 500) -> list[tuple[uuid.UUID, str]]:
        """(job id, feature) of jobs queued at least `older_than_s` ago that never started and
        were never sent again."""
        ...

    def claim_unstarted(
        self, job_ids: Sequence[uuid.UUID], hold_s: float
    ) -> list[tuple[uuid.UUID, str]]:
        """Of these jobs, those still queued and never started, marked as sent again (the
        stale-queued check leaves them alone for `hold_s`)."""
        ...

    def requeue(
        self,
        job_id: uuid.UUID,
        error_kind: str,
        error_message: str,
        spend: Spend | None = None,
        retry_in_s: float | None = None,
    ) -> None:
        """Put a running job back to queued, noting why, and adding what the attempt spent."""
        ...

    def succeed(
        self,
        job_id: uuid.UUID,
        result: Mapping[str, Any],
        spend: Spend,
        notifications: Sequence[Notification],
    ) -> JobRecord:
        """Commit the result and its notifications together, once; later calls change nothing."""
        ...

    def fail(
        self,
        job_id: uuid.UUID,
        error_kind: str,
        error_message: str,
        spend: Spend,
        notifications: Sequence[Notification],
    ) -> JobRecord:
        """Commit the failure and its notifications together, once; later calls change nothing."""
        ...

    def cancel(
        self, job_id: uuid.UUID, reason: str, notifications: Sequence[Notification]
    ) -> JobRecord:
        """End a queued or running job as cancelled with its notifications; else no change."""
        ...

    def list_jobs(self, filters: JobFilter) -> list[JobRecord]:
        """Jobs matching the filters, newest first."""
        ...

    def pending_notifications(self, job_id: uuid.UUID) -> list[uuid.UUID]:
        """Ids of this job's notifications not yet delivered to every transport."""
        ...


class Transport(Protocol):
    """One way of telling the app about an event (Socket.IO, webhook, log)."""

    @property
    def name(self) -> str: ...

    def send(self, notification: Notification) -> None:
        """Deliver once; raise `TransientError` to be retried."""
        ...


class ChatStore(Protocol):
    """Conversations and their messages; each job writes its user message and reply once."""

    def earlier_turn_open(self, job: JobRecord, conversation_id: str) -> bool:
        """Whether a job created before `job` in this conversation has not ended yet."""
        ...

    def add_user_message_and_history(
        self, job_id: uuid.UUID, conversation_id: str, user_id: str, content: str, *, limit: int
    ) -> tuple[ChatMessageRecord, list[ChatMessageRecord]]:
        """Store the job's user message (once; `InvalidJob` if the conversation is not theirs),
        with the last `limit` messages before it, oldest first (as `history` gives them)."""
        ...

    def add_reply(
        self,
        job_id: uuid.UUID,
        conversation_id: str,
        content: str,
        finish_reason: FinishReason = "stop",
    ) -> ChatMessageRecord:
        """Store the job's reply (once) after everything already in the conversation, with
        why it ended ("length": the token limit cut it)."""
        ...

    def reply_for(self, job_id: uuid.UUID) -> ChatMessageRecord | None: ...

    def claim_turn(
        self,
        conversation_id: str,
        user_id: str,
        job_id: uuid.UUID,
        ttl_s: float,
        *,
        created_at: datetime | None = None,
    ) -> bool:
        """Hold the conversation while this job writes its reply; False if another job does,
        or, with `created_at` (the job's), while an earlier turn is open (`earlier_turn_open`)."""
        ...

    def release_turn(self, conversation_id: str, job_id: uuid.UUID) -> None:
        """Let the next turn go (only if this job holds the conversation)."""
        ...

    def history(
        self, conversation_id: str, *, before_seq: int, limit: int
    ) -> list[ChatMessageRecord]:
        """The last `limit` messages before `before_seq`, oldest first."""
        ...


class ChunkSink(Protocol):
    """Where the pieces of a reply go while it is written (the user's room, a replay log)."""

    def chunk(self, chunk: ChatChunk) -> None:
        """Best effort: a lost chunk must not fail the job (the full reply is committed)."""
        ...

    def restart(self, restart: ChatRestart) -> None:
        """Tell the client to drop what an earlier attempt streamed."""
        ...


class EventsClient(Protocol):
    """Reads events (the NestJS internal API); read-only by design."""

    def search_events(self, **params: Any) -> list[dict[str, Any]]:
        """`GET /internal/events/search` with the given query parameters."""
        ...

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        """One event, or None when it does not exist."""
        ...


class AgentStepStore(Protocol):
    """An agent run's steps, each committed with its notification before the run goes on."""

    def steps(self, job_id: uuid.UUID) -> list[AgentStep]: ...

    def add_step(self, step: AgentStep, notifications: Sequence[Notification]) -> list[uuid.UUID]:
        """Commit the step once (a second add of the same number changes nothing); return the
        ids of its notifications still to deliver."""
        ...


class BatchLLM(Protocol):
    """A vendor's batch API: half the price, answers within 24 hours (OpenAI's Batch API,
    Anthropic's Message Batches). Every failure of a call comes out as a `VamuError`."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    def submit(self, requests: Sequence[BatchRequest]) -> str:
        """Send the requests as one batch; the vendor's batch id."""
        ...

    def state(self, batch_id: str) -> BatchState: ...

    def answers(self, batch_id: str) -> Iterator[BatchAnswer]:
        """The outcome of each request of an ended batch (requests missing never ran)."""
        ...

    def cancel(self, batch_id: str) -> None: ...
