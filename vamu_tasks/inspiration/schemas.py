"""The `inspiration.generate` job's input and result, as NestJS sends and reads them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vamu_tasks.domain import DATE_TIME_PATTERN, LOCALE_PATTERN, JobRequest, JobText


class InspirationRequest(JobRequest):
    """Data of the BullMQ job `inspiration.generate` (camelCase on the wire)."""

    user_id: JobText = Field(min_length=1, max_length=128)
    count: int = Field(default=3, ge=1, le=10)
    # Its own pattern instead of JobText's: a BCP 47 tag has no room for NUL either.
    locale: str | None = Field(default=None, max_length=35, pattern=LOCALE_PATTERN)
    hint: JobText | None = Field(default=None, max_length=500)
    request_id: JobText | None = Field(default=None, max_length=255)
    traceparent: JobText | None = Field(default=None, max_length=128)
    deliver_by: str | None = Field(
        default=None,
        pattern=DATE_TIME_PATTERN,
        json_schema_extra={"format": "date-time"},
        description=(
            "The job can wait until this time (RFC 3339 with an offset, e.g. "
            "2026-12-03T08:00:00Z): it runs in the vendor's half-price batch tier, and "
            "synchronously if its batch has not ended when the time nears. Absent: now."
        ),
    )

    @field_validator("deliver_by")
    @classmethod
    def _deliver_by_is_a_date(cls, value: str | None) -> str | None:
        # The pattern cannot know the calendar: 2026-02-30 matches it.
        if value is not None:
            try:
                datetime.fromisoformat(value)
            except ValueError as exc:
                raise ValueError(f"not a date-time: {exc}") from None
        return value


class Idea(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1, max_length=2000)
    category: str = Field(min_length=1, max_length=80)
    when: str | None = Field(default=None, max_length=200)
    where: str | None = Field(default=None, max_length=200)


class InspirationResult(BaseModel):
    """The `result` stored on the job row: `{"ideas": [...]}`."""

    model_config = ConfigDict(extra="forbid")

    ideas: list[Idea] = Field(min_length=1, max_length=10)


def llm_output_schema(count: int) -> dict[str, object]:
    """The schema the model must fill: strict-mode shaped (every key required, nulls allowed)."""
    nullable = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    idea = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "description": {"type": "string"},
            "category": {"type": "string"},
            "when": nullable,
            "where": nullable,
        },
        "required": ["title", "description", "category", "when", "where"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "ideas": {"type": "array", "items": idea, "minItems": count, "maxItems": count}
        },
        "required": ["ideas"],
        "additionalProperties": False,
    }
