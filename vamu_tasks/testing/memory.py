"""In-memory fakes of the ports, for use-case tests, benchmarks and experiments."""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from vamu_tasks.domain import (
    MAX_ERROR_MESSAGE,
    TERMINAL_STATUSES,
    AssistantTurn,
    ChatChunk,
    ChatMessageRecord,
    ChatRestart,
    Delivery,
    FinishReason,
    JobFilter,
    JobRecord,
    LLMRequest,
    LLMResult,
    NewJob,
    Notification,
    Spend,
    StreamEvent,
    TextDelta,
    ToolsRequest,
    ToolTurnResult,
    Usage,
)
from vamu_tasks.errors import InvalidJob, LeaseHeld, VamuError


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Outbox:
    notification: Notification
    pending: list[str]
    attempts: int = 0
    last_error: str | None = None


class _MemoryDelivery:
    def __init__(self, store: InMemoryJobStore, row: _Outbox) -> None:
        self._store = store
        self._row = row
        self.notification = row.notification
        self.pending = list(row.pending)

    def mark_delivered(self, transport: str) -> None:
        self.pending = [t for t in self.pending if t != transport]
        self._store.mark_delivered(self.notification.id, transport)

    def record_failure(self, error: str, retry_in_s: float) -> None:
        self._store.record_delivery_failure(self.notification.id, error, retry_in_s)


def _spend_values(job: JobRecord, spend: Spend) -> dict[str, Any]:
    if spend.provider is None:
        return {}
    return {
        "provider": spend.provider,
        "model": spend.model,
        "input_tokens": (job.input_tokens or 0) + spend.usage.input_tokens,
        "output_tokens": (job.output_tokens or 0) + spend.usage.output_tokens,
        "cache_read_tokens": (job.cache_read_tokens or 0) + spend.usage.cache_read_tokens,
        "cache_write_tokens": (job.cache_write_tokens or 0) + spend.usage.cache_write_tokens,
        "cost_usd": (job.cost_usd or 0) + spend.cost_usd
        if spend.cost_usd is not None
        else job.cost_usd,
    }


class InMemoryJobStore:
    """Behaves like `SqlAlchemyJobStore`, including once-only finishing and the outbox."""

    def __init__(self, *, transports: Sequence[str] = ("log",)) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[uuid.UUID, JobRecord] = {}
        self._refs: dict[tuple[str, str], uuid.UUID] = {}
        self._transports = list(transports)
        self.outbox: dict[uuid.UUID, _Outbox] = {}
        self._delivering: set[uuid.UUID] = set()
        self._leases: dict[uuid.UUID, tuple[str, datetime]] = {}
        self._retry_at: dict[uuid.UUID, datetime] = {}

    @property
    def jobs(self) -> list[JobRecord]:
        with self._lock:
            return list(self._jobs.values())

    def create_job(self, job: NewJob) -> tuple[JobRecord, bool]:
        with self._lock:
            if job.source_ref is not None and (job.source, job.source_ref) in self._refs:
                return self._jobs[self._refs[(job.source, job.source_ref)]], False
            record = JobRecord(
                id=job.id,
                feature=job.feature,
                user_id=job.user_id,
                status="batched" if job.deliver_by else "queued",
                request=copy.deepcopy(dict(job.request)),
                result=None,
                error_kind=None,
                error_message=None,
                attempts=0,
                source=job.source,
                source_ref=job.source_ref,
                provider=None,
                model=None,
                input_tokens=None,
                output_tokens=None,
                cost_usd=None,
                created_at=_now(),
                started_at=None,
                finished_at=None,
                rerun_of=job.rerun_of,
                notify=job.notify,
                rerun_reason=job.rerun_reason,
                requested_by=job.requested_by,
                deliver_by=job.deliver_by,
            )
            self._jobs[job.id] = record
            if job.source_ref is not None:
                self._refs[(job.source, job.source_ref)] = job.id
            return record, True

    def get_job(self, job_id: uuid.UUID) -> JobRecord | None:
        with self._lock:
            return self._jobs.get(job_id)

    def find_job(self, source: str, source_ref: str) -> JobRecord | None:
        with self._lock:
            job_id = self._refs.get((source, source_ref))
            return self._jobs[job_id] if job_id else None

    def _get(self, job_id: uuid.UUID) -> JobRecord:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise LookupError(f"No ai_jobs row {job_id}") from None

    def start_attempt(
        self, job_id: uuid.UUID, owner: str | None = None, lease_s: float = 0.0
    ) -> JobRecord:
        with self._lock:
            job = self._get(job_id)
            if job.status in TERMINAL_STATUSES:
                return job
            now = _now()
            held = self._leases.get(job_id)
            if owner and held and held[0] not in ("", owner) and held[1] > now:
                raise LeaseHeld(f"job {job_id} is running on {held[0]}")
            if owner:
                self._leases[job_id] = (owner, now + timedelta(seconds=lease_s))
            self._retry_at.pop(job_id, None)
            job = replace(
                job,
                status="running",
                attempts=job.attempts + 1,
                started_at=job.started_at or now,
            )
            self._jobs[job_id] = job
            return job

    def renew_leases(self, held: Sequence[tuple[uuid.UUID, str]], lease_s: float) -> None:
        with self._lock:
            for job_id, owner in held:
                current = self._leases.get(job_id)
                if current and current[0] == owner:
                    self._leases[job_id] = (owner, _now() + timedelta(seconds=lease_s))

    def reap(
        self, grace_s: float, limit: int = 200, stale_queued_s: float | None = None
    ) -> list[tuple[uuid.UUID, str]]:
        with self._lock:
            now = _now()
            found: list[tuple[uuid.UUID, str]] = []
            for job_id, (_owner, until) in list(self._leases.items()):
                job = self._jobs[job_id]
                if job.status == "running" and until < now:
                    self._leases[job_id] = ("", now + timedelta(seconds=grace_s))
                    found.append((job_id, job.feature))
            for job_id, due in list(self._retry_at.items()):
                job = self._jobs[job_id]
                if job.status == "queued" and due < now - timedelta(seconds=grace_s):
                    self._retry_at[job_id] = now + timedelta(seconds=grace_s)
                    found.append((job_id, job.feature))
        if stale_queued_s is not None:
            stale = [job_id for job_id, _ in self.unstarted_jobs(stale_queued_s, limit)]
            found += self.claim_unstarted(stale, stale_queued_s)
        return found[:limit]

    def _never_started(self, job: JobRecord) -> bool:
        return job.status == "queued" and job.attempts == 0 and job.id not in self._retry_at

    def unstarted_jobs(self, older_than_s: float, limit: int = 500) -> list[tuple[uuid.UUID, str]]:
        cutoff = _now() - timedelta(seconds=older_than_s)
        with self._lock:
            jobs = [j for j in self._jobs.values() if self._never_started(j)]
        jobs = sorted((j for j in jobs if j.created_at < cutoff), key=lambda j: j.created_at)
        found: list[tuple[uuid.UUID, str]] = [(j.id, j.feature) for j in jobs]
        return found[:limit]

    def claim_unstarted(
        self, job_ids: Sequence[uuid.UUID], hold_s: float
    ) -> list[tuple[uuid.UUID, str]]:
        with self._lock:
            known = [self._jobs[i] for i in job_ids if i in self._jobs]
            claimed = [j for j in known if self._never_started(j)]
            for job in claimed:
                self._retry_at[job.id] = _now() + timedelta(seconds=hold_s)
        ids: list[tuple[uuid.UUID, str]] = [(j.id, j.feature) for j in claimed]
        return ids

    def requeue(
        self,
        job_id: uuid.UUID,
        error_kind: str,
        error_message: str,
        spend: Spend | None = None,
        retry_in_s: float | None = None,
    ) -> None:
        with self._lock:
            job = self._get(job_id)
            if job.status in ("queued", "running"):
                self._leases.pop(job_id, None)
                if retry_in_s is not None:
                    self._retry_at[job_id] = _now() + timedelta(seconds=retry_in_s)
                job = replace(
                    job,
                    status="queued",
                    error_kind=error_kind,
                    error_message=error_message[:MAX_ERROR_MESSAGE],
                )
                self._jobs[job_id] = replace(job, **_spend_values(job, spend or Spend()))

    def succeed(
        self,
        job_id: uuid.UUID,
        result: Mapping[str, Any],
        spend: Spend,
        notifications: Sequence[Notification],
    ) -> JobRecord:
        return self._finish(
            job_id,
            spend,
            notifications,
            status="succeeded",
            result=copy.deepcopy(dict(result)),
            error_kind=None,
            error_message=None,
        )

    def cancel(
        self, job_id: uuid.UUID, reason: str, notifications: Sequence[Notification]
    ) -> JobRecord:
        return self._finish(
            job_id,
            Spend(),
            notifications,
            status="cancelled",
            error_kind="cancelled",
            error_message=reason[:MAX_ERROR_MESSAGE],
        )

    def list_jobs(self, filters: JobFilter) -> list[JobRecord]:
        def matches(job: JobRecord) -> bool:
            return (
                (not filters.ids or job.id in filters.ids)
                and (filters.status is None or job.status == filters.status)
                and (filters.feature is None or job.feature == filters.feature)
                and (filters.error_kind is None or job.error_kind == filters.error_kind)
                and (filters.since is None or job.created_at >= filters.since)
                and (filters.until is None or job.created_at < filters.until)
            )

        found = sorted(
            (j for j in self.jobs if matches(j)), key=lambda j: j.created_at, reverse=True
        )
        return found[: filters.limit]

    def fail(
        self,
        job_id: uuid.UUID,
        error_kind: str,
        error_message: str,
        spend: Spend,
        notifications: Sequence[Notification],
    ) -> JobRecord:
        return self._finish(
            job_id,
            spend,
            notifications,
            status="failed",
            error_kind=error_kind,
            error_message=error_message[:MAX_ERROR_MESSAGE],
        )

    def _finish(
        self, job_id: uuid.UUID, spend: Spend, notifications: Sequence[Notification], **values: Any
    ) -> JobRecord:
        with self._lock:
            job = self._get(job_id)
            if job.status in TERMINAL_STATUSES:
                return job
            self._leases.pop(job_id, None)
            self._retry_at.pop(job_id, None)
            values.update(_spend_values(job, spend))
            job = replace(job, finished_at=_now(), **values)
            self._jobs[job_id] = job
            if self._transports:
                for note in notifications:
                    self.outbox.setdefault(note.id, _Outbox(note, list(self._transports)))
            return job

    def pending_notifications(self, job_id: uuid.UUID) -> list[uuid.UUID]:
        with self._lock:
            return [
                k for k, v in self.outbox.items() if v.notification.job_id == job_id and v.pending
            ]

    def get_notification(self, event_id: uuid.UUID) -> tuple[Notification, list[str]] | None:
        with self._lock:
            row = self.outbox.get(event_id)
            return (row.notification, list(row.pending)) if row else None

    @contextmanager
    def delivering(self, event_id: uuid.UUID) -> Iterator[Delivery | None]:
        with self._lock:
            row = self.outbox.get(event_id)
            busy = event_id in self._delivering
            if row is None or not row.pending or busy:
                row = None
            else:
                self._delivering.add(event_id)
        if row is None:
            yield None
            return
        try:
            yield _MemoryDelivery(self, row)
        finally:
            with self._lock:
                self._delivering.discard(event_id)

    def mark_delivered(self, event_id: uuid.UUID, transport: str) -> None:
        with self._lock:
            row = self.outbox.get(event_id)
            if row is not None:
                row.pending = [t for t in row.pending if t != transport]

    @property
    def transports(self) -> list[str]:
        return list(self._transports)

    def mark_sent(self, event_ids: Sequence[uuid.UUID], transports: Sequence[str]) -> None:
        for event_id in event_ids:
            for transport in transports:
                self.mark_delivered(event_id, transport)

    def record_delivery_failure(self, event_id: uuid.UUID, error: str, retry_in_s: float) -> None:
        with self._lock:
            row = self.outbox.get(event_id)
            if row is not None:
                row.attempts += 1
                row.last_error = error


Script = Callable[[LLMRequest], LLMResult | str | VamuError]


@dataclass(frozen=True)
class Cut:
    """A scripted answer the output token limit cut off (finish reason "length")."""

    text: str


Scripted = str | Cut | VamuError


class ScriptedLLM:
    """An `LLMProvider` that answers from a list of texts or errors, and records every request."""

    def __init__(
        self,
        answers: Iterable[Scripted] = (),
        *,
        name: str = "scripted",
        model: str = "gpt-5-mini",
        usage: Usage | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self._answers: list[Scripted] = list(answers)
        self._turns: list[AssistantTurn | str | VamuError] = []
        self._usage = usage or Usage(input_tokens=100, output_tokens=50)
        self.requests: list[LLMRequest | ToolsRequest] = []

    def push(self, *answers: Scripted) -> None:
        self._answers.extend(answers)

    def complete(self, request: LLMRequest) -> LLMResult:
        self.requests.append(request)
        if not self._answers:
            raise AssertionError("ScriptedLLM has no answer left for this request")
        answer = self._answers.pop(0)
        if isinstance(answer, VamuError):
            raise answer
        if isinstance(answer, Cut):
            return LLMResult(answer.text, self.name, self.model, self._usage, "length")
        return LLMResult(answer, self.name, self.model, self._usage, "stop")

    def complete_with_tools(self, request: ToolsRequest) -> ToolTurnResult:
        """The next scripted answer: an `AssistantTurn`, plain text, or an error to raise."""
        self.requests.append(request)
        if not self._turns:
            raise AssertionError("ScriptedLLM has no tool turn left for this request")
        answer = self._turns.pop(0)
        if isinstance(answer, VamuError):
            raise answer
        turn = AssistantTurn(answer) if isinstance(answer, str) else answer
        return ToolTurnResult(turn, self.name, self.model, self._usage, "stop")

    def push_turns(self, *turns: AssistantTurn | str | VamuError) -> None:
        self._turns.extend(turns)

    def stream(self, request: LLMRequest) -> Iterator[StreamEvent]:
        """The scripted answer in 5-character deltas; a scripted error is raised at once."""
        result = self.complete(request)
        for start in range(0, len(result.text), 5):
            yield TextDelta(result.text[start : start + 5])
        yield result


class RecordingTransport:
    """A `Transport` that keeps what it was sent; `fail_next` makes the next sends fail."""

    def __init__(self, name: str = "log") -> None:
        self.name = name
        self.sent: list[Notification] = []
        self._failures = 0

    def fail_next(self, count: int = 1) -> None:
        self._failures += count

    def send(self, notification: Notification) -> None:
        from vamu_tasks.notify.transports import DeliveryFailed

        if self._failures:
            self._failures -= 1
            raise DeliveryFailed(f"{self.name} is down (test)")
        self.sent.append(notification)


class InMemoryChatStore:
    """Behaves like `SqlAlchemyChatStore`; reads job rows from an `InMemoryJobStore`."""

    def __init__(self, jobs: InMemoryJobStore) -> None:
        self._jobs = jobs
        self._lock = threading.Lock()
        self._owners: dict[str, str] = {}
        self._messages: dict[str, list[ChatMessageRecord]] = {}
        self._busy: dict[str, tuple[uuid.UUID, datetime]] = {}

    def earlier_turn_open(self, job: JobRecord, conversation_id: str) -> bool:
        return self._earlier_open(job.user_id, conversation_id, job.created_at, job.id)

    def _earlier_open(
        self, user_id: str, conversation_id: str, created_at: datetime, job_id: uuid.UUID
    ) -> bool:
        return any(
            other.feature == "chatbot"
            and other.user_id == user_id
            and other.status in ("queued", "running")
            and other.request.get("conversationId") == conversation_id
            and (other.created_at, str(other.id)) < (created_at, str(job_id))
            for other in self._jobs.jobs
        )

    def add_user_message_and_history(
        self, job_id: uuid.UUID, conversation_id: str, user_id: str, content: str, *, limit: int
    ) -> tuple[ChatMessageRecord, list[ChatMessageRecord]]:
        with self._lock:
            owner = self._owners.setdefault(conversation_id, user_id)
            if owner != user_id:
                raise InvalidJob(f"conversationId {conversation_id!r} belongs to another user")
            asked = self._add(job_id, conversation_id, "user", content)
        return asked, self.history(conversation_id, before_seq=asked.seq, limit=limit)

    def add_reply(
        self,
        job_id: uuid.UUID,
        conversation_id: str,
        content: str,
        finish_reason: FinishReason = "stop",
    ) -> ChatMessageRecord:
        with self._lock:
            if conversation_id not in self._owners:
                raise LookupError(f"No conversation {conversation_id!r}")
            return self._add(job_id, conversation_id, "assistant", content, finish_reason)

    def _add(
        self,
        job_id: uuid.UUID,
        conversation_id: str,
        role: Literal["user", "assistant"],
        content: str,
        finish_reason: FinishReason | None = None,
    ) -> ChatMessageRecord:
        messages = self._messages.setdefault(conversation_id, [])
        for message in messages:
            if message.job_id == job_id and message.role == role:
                return message
        record = ChatMessageRecord(
            uuid.uuid4(), job_id, role, content, len(messages) + 1, finish_reason
        )
        messages.append(record)
        return record

    def claim_turn(
        self,
        conversation_id: str,
        user_id: str,
        job_id: uuid.UUID,
        ttl_s: float,
        *,
        created_at: datetime | None = None,
    ) -> bool:
        with self._lock:
            # One step with the claim, as the SQL store's single statement.
            if created_at is not None and self._earlier_open(
                user_id, conversation_id, created_at, job_id
            ):
                owner = self._owners.get(conversation_id)
                return owner is not None and owner != user_id
            if self._owners.setdefault(conversation_id, user_id) != user_id:
                return True
            holder = self._busy.get(conversation_id)
            now = _now()
            if holder is not None and holder[0] != job_id and holder[1] > now:
                return False
            self._busy[conversation_id] = (job_id, now + timedelta(seconds=ttl_s))
            return True

    def release_turn(self, conversation_id: str, job_id: uuid.UUID) -> None:
        with self._lock:
            holder = self._busy.get(conversation_id)
            if holder is not None and holder[0] == job_id:
                del self._busy[conversation_id]

    def reply_for(self, job_id: uuid.UUID) -> ChatMessageRecord | None:
        with self._lock:
            for messages in self._messages.values():
                for message in messages:
                    if message.job_id == job_id and message.role == "assistant":
                        return message
            return None

    def history(
        self, conversation_id: str, *, before_seq: int, limit: int
    ) -> list[ChatMessageRecord]:
        with self._lock:
            earlier = [m for m in self._messages.get(conversation_id, []) if m.seq < before_seq]
            return earlier[-limit:] if limit else []

    def messages(self, conversation_id: str) -> list[ChatMessageRecord]:
        with self._lock:
            return list(self._messages.get(conversation_id, []))


class RecordingChunkSink:
    """A `ChunkSink` that keeps the chunks and restarts it was given, in order."""

    def __init__(self) -> None:
        self.events: list[ChatChunk | tuple[str, uuid.UUID, int]] = []

    @property
    def chunks(self) -> list[ChatChunk]:
        return [e for e in self.events if isinstance(e, ChatChunk)]

    def chunk(self, chunk: ChatChunk) -> None:
        self.events.append(chunk)

    def restart(self, restart: ChatRestart) -> None:
        self.events.append(("restart", restart.job_id, restart.attempt))
