"""Value objects shared by the use cases, the ports and the adapters (no I/O here)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel

Feature = Literal["inspiration", "chatbot", "agent"]
# `batched`: waiting for, or in, a vendor batch (the batch tier, `deliverBy`); it leaves that
# state for `succeeded` or `failed` when the batch's result is committed, or for `queued` when
# it goes down the synchronous path.
JobStatus = Literal["queued", "batched", "running", "succeeded", "failed", "cancelled"]
JobSource = Literal["bullmq", "cli", "api"]
# Why an answer ended: complete, or cut at the output token limit (the vendors' `end_turn` /
# `completed` and `max_tokens` / `incomplete: max_output_tokens`).
FinishReason = Literal["stop", "length"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
MAX_ERROR_MESSAGE = 2000  # characters of error_message kept on a job row

# Namespace for deterministic event ids: the same job and event always get the same id.
EVENT_NAMESPACE = uuid.UUID("5b0d6a0e-8c1f-4f3e-9f8a-6d2b7c1e4a90")


def event_id_for(job_id: uuid.UUID, event: str, discriminator: str = "") -> uuid.UUID:
    """A notification id that stays the same across retries and redeliveries."""
    return uuid.uuid5(EVENT_NAMESPACE, f"{job_id}:{event}:{discriminator}")


class CamelModel(BaseModel):
    """Base for wire models that speak camelCase JSON (NestJS) but snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# The patterns below are read by two regex dialects: pydantic's (Rust `regex`) when the bridge
# validates, and ECMA-262 in whatever validates against the published JSON Schema (ajv in
# NestJS). So: anchored with ^ and $, no lookarounds, no inline flags, no \d (Unicode in Rust).

# PostgreSQL's text and jsonb cannot hold U+0000: refused at validation, it is a clear
# invalid_job instead of a database error at insert time, and the schema says so too.
NO_NUL_PATTERN = r"^[^\x00]*$"

# A well-formed BCP 47 language tag (RFC 5646, without the grandfathered irregular tags):
# language (with up to three extlangs), then optional script, region, variants, extensions and
# private use, e.g. "de", "en-GB", "es-419", "zh-Hant-TW", "de-CH-1996". Tags are
# case-insensitive, hence both cases. Subtags are not checked against the IANA registry.
LOCALE_PATTERN = (
    r"^(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4,8})"
    r"(?:-[A-Za-z]{4})?"
    r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
    r"(?:-[0-9A-WYZa-wyz](?:-[A-Za-z0-9]{2,8})+)*"
    r"(?:-[Xx](?:-[A-Za-z0-9]{1,8})+)?$"
)

# An RFC 3339 date-time with its offset (the ISO 8601 profile JSON Schema's `date-time` means):
# "2026-12-03T08:00:00Z", "2026-12-03T09:00:00.5+01:00". A pattern, not only `format`, because
# JSON Schema validators treat `format` as a note unless told otherwise.
DATE_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})$"
)

# What `invalid_job` says when a value does not match one of the patterns above (pydantic would
# quote the regex itself).
PATTERN_PROBLEMS: Mapping[str, str] = {
    NO_NUL_PATTERN: "must not contain the NUL character (U+0000)",
    LOCALE_PATTERN: "expected a BCP 47 language tag, such as en-GB, pt-BR or zh-Hant-TW",
    DATE_TIME_PATTERN: "expected a date-time with an offset, such as 2026-12-03T08:00:00Z",
}

# Every text field of a job request: stored on the job row (jsonb), so no NUL.
JobText = Annotated[str, Field(pattern=NO_NUL_PATTERN)]


class JobRequest(CamelModel):
    """Base for a job's input, validated exactly as its published JSON Schema says.

    Strict: JSON types are not coerced, so `"3"` is not an integer and `true` is not 1 (lax
    pydantic accepts both, the schema refuses both). Use `JobText` for every text field.
    """

    model_config = ConfigDict(strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _whole_numbers_are_integers(cls, value: object, info: ValidationInfo) -> object:
        # JSON Schema counts 3.0 as an integer (a number with no fractional part), strict
        # pydantic does not; Python's json.loads turns `3.0` into a float, so convert it back.
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and field.annotation is int and isinstance(value, float):
            if value.is_integer():
                return int(value)
        return value


# An IANA time zone name ("Europe/London", "America/Argentina/Buenos_Aires", "UTC",
# "Etc/GMT+5"): words of letters, digits, "_", "-" and "+", joined by "/". Only the shape is
# checked: the tz database differs from host to host, so the name is not looked up.
IANA_TIMEZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*$"


class ApiModel(CamelModel):
    """Base for what the NestJS internal API sends: fields it adds later are ignored, not an
    error, so NestJS can grow a response without breaking running workers."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class GeoPoint(ApiModel):
    lat: float = Field(ge=-90, le=90, description="Latitude in degrees (WGS 84).")
    lng: float = Field(ge=-180, le=180, description="Longitude in degrees (WGS 84).")


class RecentEvent(ApiModel):
    """An event the user went to or booked lately."""

    id: str = Field(min_length=1)
    title: str
    category: str
    starts_at: AwareDatetime = Field(
        description="RFC 3339 date-time with an offset, e.g. 2026-11-14T20:00:00Z."
    )


class UserContext(ApiModel):
    """The user's profile as the NestJS internal API returns it."""

    user_id: str = Field(min_length=1, description="The id the job names (`userId`).")
    display_name: str
    locale: str = Field(
        default="en-GB",
        max_length=35,
        pattern=LOCALE_PATTERN,
        description="BCP 47 language tag, such as en-GB, pt-BR or zh-Hant-TW. Absent: en-GB.",
    )
    timezone: str = Field(
        default="UTC",
        pattern=IANA_TIMEZONE_PATTERN,
        description="IANA time zone name, such as Europe/London or America/Sao_Paulo. Absent: UTC.",
        examples=["Europe/London"],
    )
    city: str | None = Field(default=None, description="Absent or null: not known.")
    location: GeoPoint | None = Field(default=None, description="Absent or null: not known.")
    interests: list[str] = Field(default_factory=list, description="Absent: none.")
    recent_events: list[RecentEvent] = Field(default_factory=list, description="Absent: none.")


@dataclass(frozen=True)
class Message:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class OutputSchema:
    """A JSON Schema the provider should constrain its output to (strict-mode compatible)."""

    name: str
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class LLMRequest:
    """One call: stable parts first (system, then messages oldest first), the new one last.

    `cache_key` groups the requests that share a prefix (OpenAI's `prompt_cache_key`): per
    feature and user, or per conversation. Nothing volatile goes in front of a stable part.
    """

    system: str
    messages: tuple[Message, ...]
    output_schema: OutputSchema | None = None
    max_output_tokens: int = 1024
    cache_key: str | None = None
    # Whose job the call is for: spend budgets are counted per user.
    user_id: str | None = None

    def prompt_chars(self) -> int:
        """How much text the call sends, for the budgets' guesses before it is made."""
        return len(self.system) + sum(len(m.content) for m in self.messages)


@dataclass(frozen=True)
class Usage:
    """Token counts normalised across vendors.

    `input_tokens` is every input token, cache reads and writes included (OpenAI's meaning;
    Anthropic reports the three parts apart). `cache_write_1h_tokens` is the part of
    `cache_write_tokens` written with Anthropic's 1-hour TTL, which costs more.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
        )


@dataclass(frozen=True)
class LLMResult:
    text: str
    provider: str
    model: str
    usage: Usage
    finish_reason: FinishReason


@dataclass(frozen=True)
class TextDelta:
    """A piece of a streamed answer, in order."""

    text: str


StreamEvent = TextDelta | LLMResult  # deltas, then exactly one LLMResult with the whole text


@dataclass(frozen=True)
class Spend:
    """What a job's LLM calls cost, summed over the calls of one attempt."""

    provider: str | None = None
    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal | None = None


@dataclass(frozen=True)
class NewJob:
    feature: Feature
    user_id: str
    request: Mapping[str, Any]
    source: JobSource
    source_ref: str | None = None
    rerun_of: uuid.UUID | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    notify: bool = True
    rerun_reason: str | None = None
    requested_by: str | None = None
    # Set: the job waits for the batch tier (status `batched`) instead of being sent now.
    deliver_by: datetime | None = None


@dataclass(frozen=True)
class JobRecord:
    """One row of `ai_jobs`, as the use cases see it."""

    id: uuid.UUID
    feature: Feature
    user_id: str
    status: JobStatus
    request: Mapping[str, Any]
    result: Mapping[str, Any] | None
    error_kind: str | None
    error_message: str | None
    attempts: int
    source: JobSource
    source_ref: str | None
    provider: str | None
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: Decimal | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    rerun_of: uuid.UUID | None
    notify: bool = True
    rerun_reason: str | None = None
    requested_by: str | None = None
    # The parts of input_tokens read from and written to the vendors' prompt caches (None on
    # rows written before they were counted, migration 0008).
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    # The batch tier: when the app wants the result by, and the vendor batch it was sent in.
    deliver_by: datetime | None = None
    batch_id: uuid.UUID | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class JobFilter:
    """Which jobs an operator means: every field given must match."""

    ids: tuple[uuid.UUID, ...] = ()
    status: JobStatus | None = None
    feature: Feature | None = None
    error_kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


@dataclass(frozen=True)
class Notification:
    """An event for the app about one job, addressed to the user's room."""

    id: uuid.UUID
    event: str
    user_id: str
    job_id: uuid.UUID
    data: Mapping[str, Any]


class Delivery(Protocol):
    """A notification held by one deliverer: what is pending, and how to record progress."""

    notification: Notification
    pending: list[str]

    def mark_delivered(self, transport: str) -> None: ...

    def record_failure(self, error: str, retry_in_s: float) -> None: ...


@dataclass(frozen=True)
class FeatureResult:
    """What a feature's use case hands back to the job runner."""

    result: Mapping[str, Any]
    ready_event: str
    # The ready event's payload; None means {jobId, feature, status}.
    ready_data: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ChatMessageRecord:
    """One stored chat message; `seq` orders a conversation's messages."""

    id: uuid.UUID
    job_id: uuid.UUID
    role: Literal["user", "assistant"]
    content: str
    seq: int
    # A reply's: "length" when the token limit cut it (None for replies stored before 0007).
    finish_reason: FinishReason | None = None


@dataclass(frozen=True)
class ChatRestart:
    """An attempt that starts a reply over: the client drops what earlier attempts streamed."""

    job_id: uuid.UUID
    user_id: str
    conversation_id: str
    attempt: int
    request_id: str | None = None
    rerun_of: uuid.UUID | None = None


@dataclass(frozen=True)
class ChatChunk:
    """A coalesced piece of a reply being written, for the user's Socket.IO room."""

    job_id: uuid.UUID
    user_id: str
    conversation_id: str
    attempt: int
    seq: int
    delta: str
    # The job's, for the event: the chunk names the request and the rerun like every event.
    request_id: str | None = None
    rerun_of: uuid.UUID | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: its name, what it does, and its JSON Schema arguments."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """The model asking for one tool; `arguments` is the raw JSON text it wrote."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class AssistantTurn:
    """What the model said in one step: text, tool calls, or both."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class ToolResult:
    """A tool's answer to one call, as the model will read it."""

    call_id: str
    name: str
    content: str
    is_error: bool = False


AgentItem = Message | AssistantTurn | ToolResult


@dataclass(frozen=True)
class ToolsRequest:
    system: str
    items: tuple[AgentItem, ...]
    tools: tuple[ToolSpec, ...]
    max_output_tokens: int = 1024
    cache_key: str | None = None
    user_id: str | None = None

    def prompt_chars(self) -> int:
        """How much text the call sends (tools included), as `LLMRequest.prompt_chars`."""
        sent = [self.system, *(str(item) for item in self.items), *(str(t) for t in self.tools)]
        return sum(len(part) for part in sent)


@dataclass(frozen=True)
class ToolTurnResult:
    turn: AssistantTurn
    provider: str
    model: str
    usage: Usage
    finish_reason: FinishReason


@dataclass(frozen=True)
class AgentStep:
    """One committed step of an agent run (a model call or a tool call)."""

    job_id: uuid.UUID
    step: int
    kind: Literal["model", "tool"]
    data: Mapping[str, Any]
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal | None = None


@dataclass(frozen=True)
class BatchRequest:
    """One call in a vendor batch; `custom_id` is the job id, which the result comes back with."""

    custom_id: str
    request: LLMRequest


@dataclass(frozen=True)
class BatchState:
    """A vendor batch as last polled: the vendor's own status word, and whether it has ended
    (completed, expired, cancelled or failed: nothing more will be answered)."""

    vendor_status: str
    ended: bool


@dataclass(frozen=True)
class BatchAnswer:
    """One request's outcome in an ended batch: a result, or an error as our exception tree has
    it (`error`), or neither when the request never ran (the batch expired or was cancelled)."""

    custom_id: str
    result: LLMResult | None = None
    error: Exception | None = None
