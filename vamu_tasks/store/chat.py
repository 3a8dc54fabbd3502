"""`SqlAlchemyChatStore`: conversations and messages next to the job rows.

Each call is one SQLAlchemy Core statement sent through `Database.run` (autocommit on
PostgreSQL), as on the job path (`store/statements.py`): a chat reply used to spend about 14
pool checkouts, 9 commits and 45 statements on ORM sessions (docs/performance.md). The
statements are built once, with bound parameters, and kept.

Storing a message is one statement on PostgreSQL: a data-modifying CTE takes the next `seq`
from the conversation row (creating it for a first user message) and inserts the message with
it, both only if the job has no message of that role yet; a user message can bring the history
before it in the same statement. SQLite has no data-modifying CTE: it runs the same steps in
`Database.run`'s transaction, under its single writer lock. The turn claim is one statement
too, with the check for an earlier open turn inside it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Literal, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    Row,
    and_,
    bindparam,
    exists,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from vamu_tasks.domain import ChatMessageRecord, FinishReason, JobRecord
from vamu_tasks.errors import InvalidJob
from vamu_tasks.store.models import ChatMessage, Conversation
from vamu_tasks.store.repository import OPEN_STATUSES, Database, utcnow
from vamu_tasks.store.statements import JOBS, cast_table

Role = Literal["user", "assistant"]

CONVERSATIONS = cast_table(Conversation.__table__)
MESSAGES = cast_table(ChatMessage.__table__)
_MESSAGE_COLUMNS = ("id", "conversation_id", "job_id", "role", "content", "seq", "created_at",
                    "finish_reason")  # fmt: skip


def _conv(name: str, column: str) -> Any:
    return bindparam(name, type_=CONVERSATIONS.c[column].type)


def _msg(name: str, column: str) -> Any:
    return bindparam(name, type_=MESSAGES.c[column].type)


# A constant in the SQL rather than an expanding IN parameter (see statements._OPEN).
_JOB_OPEN = text("ai_jobs.status IN (" + ", ".join(f"'{s}'" for s in OPEN_STATUSES) + ")")


def _earlier_open(user: str, created_at: str) -> Any:
    """A job of this user in this conversation, created before this one, that has not ended.

    `user` and `created_at` name its parameters: in the turn claim they must not be named like
    a column of the conversation, or Core would add them to the statement's SET or VALUES."""
    return (
        select(JOBS.c.id)
        .where(
            JOBS.c.feature == "chatbot",
            JOBS.c.user_id == bindparam(user, type_=JOBS.c.user_id.type),
            _JOB_OPEN,
            JOBS.c.request["conversationId"].as_string() == bindparam("conversation_id"),
            tuple_(JOBS.c.created_at, JOBS.c.id)
            < tuple_(
                bindparam(created_at, type_=JOBS.c.created_at.type),
                bindparam("job_id", type_=JOBS.c.id.type),
            ),
        )
        .limit(1)
    )


EARLIER_OPEN = _earlier_open("user_id", "created_at")
MESSAGE_OF_JOB = select(*(MESSAGES.c[c] for c in _MESSAGE_COLUMNS)).where(
    MESSAGES.c.job_id == _msg("job_id", "job_id"), MESSAGES.c.role == _msg("role", "role")
)
OWNER = select(CONVERSATIONS.c.user_id).where(CONVERSATIONS.c.id == _conv("conversation_id", "id"))
RELEASE_TURN = (
    update(CONVERSATIONS)
    .where(
        CONVERSATIONS.c.id == _conv("conversation_id", "id"),
        CONVERSATIONS.c.busy_job_id == _conv("job_id", "busy_job_id"),
    )
    .values(busy_job_id=None, busy_until=None)
)


# Constants inline, not as bound literals: a literal inside a data-modifying CTE lost its value
# on a compiled-cache hit ("A value is required for bind parameter").
_ONE: ColumnElement[int] = literal_column("1")


def _insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


@cache
def _claim_turn(dialect: str, after_earlier: bool) -> Any:
    """Create the conversation held by this job, or take it over when it is free, its holder is
    this job, or the holder's lease ran out; a row comes back only if the job holds it now.

    With `after_earlier`, neither happens while an earlier turn of the conversation is open
    (`_earlier_open`): the check and the claim are one statement."""
    c = CONVERSATIONS.c
    values = {
        "id": _conv("conversation_id", "id"),
        "user_id": _conv("owner", "user_id"),
        "last_seq": literal_column("0"),
        "busy_job_id": _conv("job_id", "busy_job_id"),
        "busy_until": _conv("until", "busy_until"),
        "created_at": _conv("now", "created_at"),
        "updated_at": _conv("now", "updated_at"),
    }
    if after_earlier:
        # No row to insert, so no conflict to update either, while an earlier turn is open.
        # (A WHERE also keeps SQLite from reading ON CONFLICT as a join's ON.)
        row = select(*values.values()).where(~_earlier_open("e_user", "e_created_at").exists())
        stmt = _insert(dialect)(CONVERSATIONS).from_select(list(values), row)
    else:
        stmt = _insert(dialect)(CONVERSATIONS).values(values)
    free = or_(
        c.busy_job_id.is_(None),
        c.busy_job_id == stmt.excluded.busy_job_id,
        c.busy_until.is_(None),
        c.busy_until <= stmt.excluded.created_at,
    )
    return stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={"busy_job_id": stmt.excluded.busy_job_id, "busy_until": stmt.excluded.busy_until},
        where=and_(c.user_id == stmt.excluded.user_id, free),
    ).returning(c.busy_job_id)


@cache
def _claim_turn_pg(after_earlier: bool) -> Executable:
    """PostgreSQL: the claim, and the conversation's owner as it was before it, in one
    statement (the owner tells a conversation of another user from a busy one)."""
    claimed = _claim_turn("postgresql", after_earlier).cte("claimed")
    held = select(claimed.c.busy_job_id).scalar_subquery().label("held")
    return select(held, OWNER.scalar_subquery().label("owner")).add_cte(claimed)


def _no_message_yet() -> ColumnElement[bool]:
    return ~exists().where(
        MESSAGES.c.job_id == _msg("job_id", "job_id"), MESSAGES.c.role == _msg("role", "role")
    )


@cache
def _next_seq(dialect: str, create: bool) -> Any:
    """Take the conversation's next seq, unless the job already has a message of this role.

    With `create` (a user message), the conversation is created for its owner at seq 1, and
    a conversation of another user returns nothing; otherwise it must exist."""
    c = CONVERSATIONS.c
    if not create:
        return (
            update(CONVERSATIONS)
            .where(c.id == _conv("conversation_id", "id"), _no_message_yet())
            .values(last_seq=c.last_seq + _ONE, updated_at=_conv("now", "updated_at"))
            .returning(c.last_seq)
        )
    stmt = _insert(dialect)(CONVERSATIONS).values(
        id=_conv("conversation_id", "id"),
        user_id=_conv("owner", "user_id"),
        last_seq=_ONE,
        created_at=_conv("now", "created_at"),
        updated_at=_conv("now", "updated_at"),
    )
    return stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={"last_seq": c.last_seq + _ONE, "updated_at": stmt.excluded.updated_at},
        where=and_(c.user_id == stmt.excluded.user_id, _no_message_yet()),
    ).returning(c.last_seq)


@cache
def _add_message_pg(create: bool, history: int = 0) -> Executable:
    """PostgreSQL: the seq and the message in one statement; the message is inserted only if
    the conversation step returned its seq.

    With `history`, the statement also returns that many messages before the new one (as
    `_history` would), one row each beside the new seq, or one row of NULLs if there are none.
    They are read as of the statement's start: the turn claim holds the conversation, so no
    other message of it is being written meanwhile."""
    seq = _next_seq("postgresql", create).cte("seq")
    values = [
        seq.c.last_seq if column == "seq" else _msg(f"m_{column}", column)
        for column in _MESSAGE_COLUMNS
    ]
    written = (
        MESSAGES.insert()
        .from_select(list(_MESSAGE_COLUMNS), select(*values).select_from(seq))
        .returning(MESSAGES.c.seq)
        .cte("written")
    )
    if not history:
        return select(written.c.seq).add_cte(seq)
    earlier = (
        select(*(MESSAGES.c[c] for c in _MESSAGE_COLUMNS))
        .where(
            MESSAGES.c.conversation_id == _msg("conversation_id", "conversation_id"),
            MESSAGES.c.seq < written.c.seq,
        )
        .order_by(MESSAGES.c.seq.desc())
        .limit(literal_column(str(int(history))))  # inline, as _ONE is
        .lateral("earlier")
    )
    return (
        select(written.c.seq.label("written_seq"), earlier)
        .select_from(written.outerjoin(earlier, true()))
        .add_cte(seq)
    )


def _seq(record: ChatMessageRecord) -> int:
    return record.seq


def _record(row: Row[Any]) -> ChatMessageRecord:
    return ChatMessageRecord(
        row.id,
        row.job_id,
        cast(Role, row.role),
        row.content,
        row.seq,
        cast(FinishReason | None, row.finish_reason),
    )


@cache
def _history(limit: int) -> Executable:
    return (
        select(*(MESSAGES.c[c] for c in _MESSAGE_COLUMNS))
        .where(
            MESSAGES.c.conversation_id == _msg("conversation_id", "conversation_id"),
            MESSAGES.c.seq < _msg("before_seq", "seq"),
        )
        .order_by(MESSAGES.c.seq.desc())
        .limit(limit)
    )


# A message's seq and, when asked for, the history before it.
Written = tuple[int, list[ChatMessageRecord]]


def _write_pg(
    conn: Connection, values: dict[str, Any], step: dict[str, Any], create: bool, history: int
) -> Written | None:
    message = {f"m_{column}": value for column, value in values.items()}
    if not history:
        seq = conn.execute(_add_message_pg(create), message | step).scalar()
        return None if seq is None else (seq, [])
    rows = conn.execute(_add_message_pg(create, history), message | step).all()
    if not rows:
        return None
    return rows[0].written_seq, sorted((_record(r) for r in rows if r.id is not None), key=_seq)


def _write_sqlite(
    conn: Connection, values: dict[str, Any], step: dict[str, Any], create: bool, history: int
) -> Written | None:
    """The same steps in `Database.run`'s transaction, under SQLite's single writer lock."""
    seq = conn.execute(_next_seq(conn.dialect.name, create), step).scalar()
    if seq is None:
        return None
    conn.execute(MESSAGES.insert(), {**values, "seq": seq})
    if not history:
        return seq, []
    params = {"conversation_id": values["conversation_id"], "before_seq": seq}
    return seq, [_record(row) for row in reversed(conn.execute(_history(history), params).all())]


class SqlAlchemyChatStore:
    """Shares the job store's `Database`, so both use one connection pool."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def earlier_turn_open(self, job: JobRecord, conversation_id: str) -> bool:
        params = {
            "user_id": job.user_id,
            "conversation_id": conversation_id,
            "created_at": job.created_at,
            "job_id": job.id,
        }
        return self._db.run(lambda conn: conn.execute(EARLIER_OPEN, params).first()) is not None

    def add_user_message_and_history(
        self, job_id: uuid.UUID, conversation_id: str, user_id: str, content: str, *, limit: int
    ) -> tuple[ChatMessageRecord, list[ChatMessageRecord]]:
        """The user's message and the `history` before it, in one statement on PostgreSQL."""
        asked, earlier = self._add(
            job_id, conversation_id, "user", content, owner=user_id, history=limit
        )
        if earlier is None:  # stored before: its history is read apart
            earlier = self.history(conversation_id, before_seq=asked.seq, limit=limit)
        return asked, earlier

    def add_reply(
        self,
        job_id: uuid.UUID,
        conversation_id: str,
        content: str,
        finish_reason: FinishReason = "stop",
    ) -> ChatMessageRecord:
        return self._add(job_id, conversation_id, "assistant", content, None, finish_reason)[0]

    def _add(
        self,
        job_id: uuid.UUID,
        conversation_id: str,
        role: Role,
        content: str,
        owner: str | None,
        finish_reason: FinishReason | None = None,
        history: int = 0,
    ) -> tuple[ChatMessageRecord, list[ChatMessageRecord] | None]:
        """The message, and with `history`, that many messages before it if this call wrote
        it (None if it was stored before)."""
        values: dict[str, Any] = {
            "id": uuid.uuid4(),
            "conversation_id": conversation_id,
            "job_id": job_id,
            "role": role,
            "content": content,
            "created_at": utcnow(),
            "finish_reason": finish_reason,
        }
        # No parameter named like a column of the conversation: Core would add it to the
        # statement's SET or VALUES (so the message's values go in as `m_<column>`).
        step = {"conversation_id": conversation_id, "job_id": job_id, "role": role}
        step |= {"now": values["created_at"], "owner": owner}

        def write(conn: Connection) -> Written | None:
            if conn.dialect.name == "postgresql":
                return _write_pg(conn, values, step, owner is not None, history)
            return _write_sqlite(conn, values, step, owner is not None, history)

        # Two attempts: a concurrent delivery of the same job may insert its message under us
        # (the unique (job_id, role)); the second attempt then finds that message.
        for attempt in (1, 2):
            try:
                written = self._db.run(write)
            except IntegrityError:
                if attempt == 2:
                    raise
                continue
            if written is not None:
                seq, earlier = written
                record = ChatMessageRecord(values["id"], job_id, role, content, seq, finish_reason)
                return record, earlier
            # Nothing written: the job's message exists, or the conversation is not this one's.
            existing = self._message(job_id, role)
            if existing is not None:
                return existing, None
            if owner is None:
                raise LookupError(f"No conversation {conversation_id!r}")
            raise InvalidJob(f"conversationId {conversation_id!r} belongs to another user")
        raise AssertionError("unreachable")

    def claim_turn(
        self,
        conversation_id: str,
        user_id: str,
        job_id: uuid.UUID,
        ttl_s: float,
        *,
        created_at: datetime | None = None,
    ) -> bool:
        """Take the conversation for this job's reply, unless another job holds it or, with
        `created_at` (the job's), an earlier turn of it is open."""
        now = utcnow()
        params = {
            "conversation_id": conversation_id,
            "owner": user_id,
            "job_id": job_id,
            "until": now + timedelta(seconds=ttl_s),
            "now": now,
            "e_user": user_id,
            "e_created_at": created_at,
        }
        after_earlier = created_at is not None

        def claim(conn: Connection) -> bool:
            if conn.dialect.name == "postgresql":
                held, owner = conn.execute(_claim_turn_pg(after_earlier), params).one()
            else:
                held = conn.execute(_claim_turn(conn.dialect.name, after_earlier), params).first()
                owner = None if held is not None else conn.execute(OWNER, params).scalar()
            # Not taken: an earlier turn is open, another live job holds it, or it is not this
            # user's conversation, which the use case fails as an invalid job (nothing to hold).
            return held is not None or (owner is not None and owner != user_id)

        return self._db.run(claim)

    def release_turn(self, conversation_id: str, job_id: uuid.UUID) -> None:
        params = {"conversation_id": conversation_id, "job_id": job_id}
        self._db.run(lambda conn: conn.execute(RELEASE_TURN, params))

    def _message(self, job_id: uuid.UUID, role: Role) -> ChatMessageRecord | None:
        params = {"job_id": job_id, "role": role}
        row = self._db.run(lambda conn: conn.execute(MESSAGE_OF_JOB, params).first())
        return _record(row) if row else None

    def reply_for(self, job_id: uuid.UUID) -> ChatMessageRecord | None:
        return self._message(job_id, "assistant")

    def history(
        self, conversation_id: str, *, before_seq: int, limit: int
    ) -> list[ChatMessageRecord]:
        params = {"conversation_id": conversation_id, "before_seq": before_seq}
        rows = self._db.run(lambda conn: conn.execute(_history(limit), params).all())
        return [_record(row) for row in reversed(rows)]
