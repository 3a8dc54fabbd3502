"""`SqlAlchemyChatStore`: conversations and messages next to the job rows."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Literal, cast

from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vamu_tasks.domain import ChatMessageRecord, FinishReason, JobRecord
from vamu_tasks.errors import InvalidJob
from vamu_tasks.store.models import AiJob, ChatMessage, Conversation
from vamu_tasks.store.repository import OPEN_STATUSES, Database, as_utc, utcnow

Role = Literal["user", "assistant"]


def _record(row: ChatMessage) -> ChatMessageRecord:
    return ChatMessageRecord(
        row.id,
        row.job_id,
        cast(Role, row.role),
        row.content,
        row.seq,
        cast(FinishReason | None, row.finish_reason),
    )


class SqlAlchemyChatStore:
    """Shares the job store's `Database`, so both use one connection pool."""

    def __init__(self, db: Database) -> None:
        self._session = db.transaction

    def earlier_turn_open(self, job: JobRecord, conversation_id: str) -> bool:
        with self._session() as session:
            earlier = session.scalars(
                select(AiJob.id)
                .where(
                    AiJob.feature == "chatbot",
                    AiJob.user_id == job.user_id,
                    AiJob.status.in_(OPEN_STATUSES),
                    AiJob.request["conversationId"].as_string() == conversation_id,
                    tuple_(AiJob.created_at, AiJob.id) < tuple_(job.created_at, job.id),
                )
                .limit(1)
            ).first()
            return earlier is not None

    def add_user_message(
        self, job_id: uuid.UUID, conversation_id: str, user_id: str, content: str
    ) -> ChatMessageRecord:
        return self._add(job_id, conversation_id, "user", content, owner=user_id)

    def add_reply(
        self,
        job_id: uuid.UUID,
        conversation_id: str,
        content: str,
        finish_reason: FinishReason = "stop",
    ) -> ChatMessageRecord:
        return self._add(job_id, conversation_id, "assistant", content, None, finish_reason)

    def _add(
        self,
        job_id: uuid.UUID,
        conversation_id: str,
        role: Role,
        content: str,
        owner: str | None,
        finish_reason: FinishReason | None = None,
    ) -> ChatMessageRecord:
        # Two attempts: a concurrent first message may create the conversation under us.
        for attempt in (1, 2):
            existing = self._message(job_id, role)
            if existing is not None:
                return existing
            try:
                return self._insert(job_id, conversation_id, role, content, owner, finish_reason)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _insert(
        self,
        job_id: uuid.UUID,
        conversation_id: str,
        role: Role,
        content: str,
        owner: str | None,
        finish_reason: FinishReason | None,
    ) -> ChatMessageRecord:
        with self._session() as session:
            conversation = self._conversation(session, conversation_id, owner)
            conversation.last_seq += 1
            conversation.updated_at = utcnow()
            row = ChatMessage(
                id=uuid.uuid4(),
                conversation_id=conversation_id,
                job_id=job_id,
                role=role,
                content=content,
                seq=conversation.last_seq,
                created_at=utcnow(),
                finish_reason=finish_reason,
            )
            session.add(row)
            return _record(row)

    def _conversation(
        self, session: Session, conversation_id: str, owner: str | None
    ) -> Conversation:
        """The conversation, locked for this transaction; created for its first user message."""
        conversation = session.get(Conversation, conversation_id, with_for_update=True)
        if conversation is None:
            if owner is None:
                raise LookupError(f"No conversation {conversation_id!r}")
            conversation = Conversation(
                id=conversation_id,
                user_id=owner,
                last_seq=0,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
            session.add(conversation)
            session.flush()
        elif owner is not None and conversation.user_id != owner:
            raise InvalidJob(f"conversationId {conversation_id!r} belongs to another user")
        return conversation

    def claim_turn(
        self, conversation_id: str, user_id: str, job_id: uuid.UUID, ttl_s: float
    ) -> bool:
        """Take the conversation for this job's reply, unless another job holds it."""
        for attempt in (1, 2):
            try:
                with self._session() as session:
                    try:
                        conversation = self._conversation(session, conversation_id, user_id)
                    except InvalidJob:
                        return True  # not theirs: the use case fails the job, nothing to hold
                    now = utcnow()
                    holder, until = conversation.busy_job_id, as_utc(conversation.busy_until)
                    if holder not in (None, job_id) and until is not None and until > now:
                        return False
                    conversation.busy_job_id = job_id
                    conversation.busy_until = now + timedelta(seconds=ttl_s)
                    return True
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def release_turn(self, conversation_id: str, job_id: uuid.UUID) -> None:
        with self._session() as session:
            conversation = session.get(Conversation, conversation_id, with_for_update=True)
            if conversation is not None and conversation.busy_job_id == job_id:
                conversation.busy_job_id = None
                conversation.busy_until = None

    def _message(self, job_id: uuid.UUID, role: Role) -> ChatMessageRecord | None:
        with self._session() as session:
            row = session.scalars(
                select(ChatMessage).where(ChatMessage.job_id == job_id, ChatMessage.role == role)
            ).one_or_none()
            return _record(row) if row else None

    def reply_for(self, job_id: uuid.UUID) -> ChatMessageRecord | None:
        return self._message(job_id, "assistant")

    def history(
        self, conversation_id: str, *, before_seq: int, limit: int
    ) -> list[ChatMessageRecord]:
        with self._session() as session:
            rows = session.scalars(
                select(ChatMessage)
                .where(ChatMessage.conversation_id == conversation_id, ChatMessage.seq < before_seq)
                .order_by(ChatMessage.seq.desc())
                .limit(limit)
            ).all()
            return [_record(row) for row in reversed(rows)]
