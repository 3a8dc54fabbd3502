"""SQLAlchemy 2 models of the tables this package owns (`ai_jobs`, `notification_outbox`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSONB on PostgreSQL (the contract), plain JSON on SQLite (the embedded default).
JsonType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class AiJob(Base):
    __tablename__ = "ai_jobs"
    __table_args__ = (
        UniqueConstraint("source", "source_ref", name="uq_ai_jobs_source_ref"),
        Index("ix_ai_jobs_status_created", "status", "created_at"),
        Index("ix_ai_jobs_user_created", "user_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    feature: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    request: Mapped[dict[str, Any]] = mapped_column(JsonType)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(16))
    source_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    provider: Mapped[str | None] = mapped_column(String(32), nullable=True)
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    input_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The parts of input_tokens read from / written to the vendors' prompt caches.
    cache_read_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cache_write_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rerun_of: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("ai_jobs.id"), nullable=True
    )
    notify: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    rerun_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Who runs the job now, until when (renewed while it runs); when a requeued job is due.
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The batch tier: the latest time the app wants the result (`deliverBy`), and the vendor
    # batch the job was last sent in (kept after the job leaves it, for its late result).
    deliver_by: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("llm_batches.id", name="fk_ai_jobs_batch"), nullable=True
    )


class LlmBatch(Base):
    """One vendor batch: an OpenAI Batch or an Anthropic Message Batch of waiting jobs.

    `submitting` (claimed, being sent) → `submitted` (the vendor has it; polled) → `ended`
    (results settled) or `abandoned` (never reached the vendor, or its submit failed).
    """

    __tablename__ = "llm_batches"
    __table_args__ = (Index("ix_llm_batches_status_poll", "status", "next_poll_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    vendor_batch_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    vendor_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    request_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When the batch may next be polled; also the lease of the beat polling it now.
    next_poll_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LlmBatchItem(Base):
    """A job sent in a batch; `settled_at` once its result was committed or discarded."""

    __tablename__ = "llm_batch_items"
    __table_args__ = (Index("ix_llm_batch_items_job", "job_id"),)

    batch_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("llm_batches.id"), primary_key=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("ai_jobs.id"), primary_key=True)
    # committed, failed, discarded, to_sync or unfinished.
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class NotificationOutbox(Base):
    """A notification committed with its job's result, delivered to each transport at least once."""

    __tablename__ = "notification_outbox"
    __table_args__ = (Index("ix_outbox_pending", "delivered_at", "next_attempt_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("ai_jobs.id"), index=True)
    event: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
    pending_transports: Mapped[list[str]] = mapped_column(JsonType)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Conversation(Base):
    """A chat between one user and the assistant; the id is the app's conversationId."""

    __tablename__ = "chat_conversations"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    # The job writing a reply now; other turns wait until it releases or the lease runs out.
    busy_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    busy_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ChatMessage(Base):
    """One turn's text; each job stores its user message and its reply once."""

    __tablename__ = "chat_messages"
    __table_args__ = (
        UniqueConstraint("job_id", "role", name="uq_chat_messages_job_role"),
        UniqueConstraint("conversation_id", "seq", name="uq_chat_messages_conversation_seq"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("chat_conversations.id"), index=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("ai_jobs.id"))
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # A reply's "stop" or "length"; NULL for user messages and replies stored before 0007.
    finish_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)


class AgentStepRow(Base):
    """One committed step of an agent run, the audit trail and the resume point."""

    __tablename__ = "agent_steps"
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_agent_steps_job_step"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("ai_jobs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(JsonType)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
