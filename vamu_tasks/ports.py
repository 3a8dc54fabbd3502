"""The ports the use cases depend on: `typing.Protocol`s that adapters and fakes match by shape."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from vamu_tasks.domain import (
    JobRecord,
    LLMRequest,
    LLMResult,
    NewJob,
    Notification,
    Spend,
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


class UserContextClient(Protocol):
    """Reads a user's profile and recent activity (the NestJS internal API)."""

    def get_context(self, user_id: str) -> UserContext:
        """Raise `UserNotFound` for an unknown user, `UpstreamApiError` when the API fails."""
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

    def start_attempt(self, job_id: uuid.UUID) -> JobRecord:
        """Mark a non-terminal job running and count the attempt; return terminal jobs unchanged."""
        ...

    def requeue(
        self, job_id: uuid.UUID, error_kind: str, error_message: str, spend: Spend | None = None
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
