"""The statements of a job's normal path, each one round trip, in SQLAlchemy Core.

A job crosses the database four times: the bridge creates its row, the LLM worker starts an
attempt, commits the outcome with its outbox rows, and marks the notifications it sent. Each
is one statement here, sent in autocommit, where the ORM spent a `SELECT … FOR UPDATE`, an
`UPDATE`, and `BEGIN`/`COMMIT` round trips (docs/performance.md, "What issue 16 changed, one
by one").

Each statement is built once per shape, with bound parameters, and kept: building a statement
and its cache key cost more CPU than running it. On PostgreSQL the four job-path statements are
then sent straight to psycopg (store/direct.py, through `Database.run_direct`), compiled once;
the others use SQLAlchemy's compiled cache. psycopg prepares both kinds on each connection.

PostgreSQL gets every step in one statement. SQLite (the embedded default) has no
data-modifying CTE and no JSON array arithmetic: there, `finish` and `mark_sent` run two
statements in one transaction, which its single writer lock makes just as safe.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Executable,
    Table,
    Text,
    TextClause,
    bindparam,
    case,
    cast,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB

from vamu_tasks.domain import TERMINAL_STATUSES, Notification, Spend
from vamu_tasks.store.direct import Executes
from vamu_tasks.store.models import AiJob, NotificationOutbox


def cast_table(table: Any) -> Table:
    """A mapped class's table, as the Table it is (typed as a FromClause by the ORM)."""
    assert isinstance(table, Table)
    return table


JOBS = cast_table(AiJob.__table__)
OUTBOX = cast_table(NotificationOutbox.__table__)
# A constant in the SQL, not an expanding IN (...) parameter: SQLAlchemy renders those anew at
# every execution (each value with its bind cast), which showed in the LLM worker's profile.
_OPEN = text(
    "ai_jobs.status NOT IN (" + ", ".join(f"'{s}'" for s in sorted(TERMINAL_STATUSES)) + ")"
)
_OUTBOX_COLUMNS = (
    "id",
    "job_id",
    "event",
    "user_id",
    "payload",
    "pending_transports",
    "attempts",
    "created_at",
    "next_attempt_at",
)
_SPEND_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")

GET_JOB = select(*JOBS.c).where(JOBS.c.id == bindparam("job_id"))
FIND_JOB = select(*JOBS.c).where(
    JOBS.c.source == bindparam("source"), JOBS.c.source_ref == bindparam("source_ref")
)


@cache
def _insert_job(dialect: str, keys: tuple[str, ...]) -> Executable:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(JOBS)
        .values({key: _param(key, key) for key in keys})
        .on_conflict_do_nothing(index_elements=["source", "source_ref"])
        .returning(JOBS.c.id)
    )


def insert_job(conn: Executes, values: Mapping[str, Any]) -> bool:
    """Insert a job row unless its (source, source_ref) exists; whether it was inserted."""
    statement = _insert_job(conn.dialect.name, tuple(sorted(values)))
    return conn.execute(statement, dict(values)).first() is not None


@cache
def _start_attempt(leased: bool) -> Executable:
    values: dict[str, Any] = {
        "status": "running",
        "attempts": JOBS.c.attempts + 1,
        "started_at": func.coalesce(
            JOBS.c.started_at, bindparam("now", type_=JOBS.c.started_at.type)
        ),
        "retry_at": None,
    }
    where: list[ColumnElement[bool] | TextClause] = [
        JOBS.c.id == bindparam("job_id"),
        _OPEN,
    ]
    if leased:
        values |= {"lease_owner": bindparam("owner"), "lease_until": bindparam("lease_until")}
        where.append(
            or_(
                JOBS.c.lease_owner.is_(None),
                JOBS.c.lease_owner == bindparam("owner"),
                JOBS.c.lease_until.is_(None),
                JOBS.c.lease_until <= bindparam("now", type_=JOBS.c.lease_until.type),
            )
        )
    return update(JOBS).where(*where).values(values).returning(*JOBS.c)


def start_attempt(
    conn: Executes, job_id: uuid.UUID, now: datetime, owner: str | None, lease_s: float
) -> Any:
    """Mark an open job running and count the attempt; None when the job is missing, ended or
    leased to another live attempt (the caller reads the row to say which)."""
    params: dict[str, Any] = {"job_id": job_id, "now": now}
    if owner:
        params |= {"owner": owner, "lease_until": now + timedelta(seconds=lease_s)}
    return conn.execute(_start_attempt(bool(owner)), params).first()


def _param(name: str, column: str) -> BindParameter[Any]:
    return bindparam(name, type_=JOBS.c[column].type)


@cache
def _ending(keys: tuple[str, ...], spent: bool, priced: bool) -> Any:
    values: dict[str, Any] = {key: _param(key, key) for key in keys}
    if spent:
        values["provider"] = _param("provider", "provider")
        values["model"] = _param("model", "model")
        for column in _SPEND_TOKENS:
            values[column] = func.coalesce(JOBS.c[column], 0) + bindparam(f"add_{column}")
    if priced:
        values["cost_usd"] = func.coalesce(JOBS.c.cost_usd, 0) + _param("add_cost", "cost_usd")
    values |= {
        "lease_owner": None,
        "lease_until": None,
        "retry_at": None,
        "finished_at": _param("now", "finished_at"),
    }
    return (
        update(JOBS)
        .where(JOBS.c.id == bindparam("job_id"), _OPEN)
        .values(values)
        .returning(*JOBS.c)
    )


@cache
def _finish_with_outbox(keys: tuple[str, ...], spent: bool, priced: bool, notes: int) -> Any:
    """PostgreSQL: the ending and its outbox rows in one statement; the rows are inserted only
    if the UPDATE ended the job."""
    done = _ending(keys, spent, priced).cte("done")
    rows = [
        select(*(_typed(f"n{i}_{column}", column) for column in _OUTBOX_COLUMNS)).where(
            exists(select(done.c.id))
        )
        for i in range(notes)
    ]
    source = rows[0] if notes == 1 else rows[0].union_all(*rows[1:])
    written = OUTBOX.insert().from_select(list(_OUTBOX_COLUMNS), source).cte("written")
    return select(done).add_cte(written)


def _typed(name: str, column: str) -> ColumnElement[Any]:
    """A bound value cast to its column's type: in a SELECT, PostgreSQL cannot infer it."""
    kind = OUTBOX.c[column].type
    if column in ("payload", "pending_transports"):
        return cast(bindparam(name, type_=JSONB), JSONB)
    return cast(bindparam(name, type_=kind), kind)


def finish(
    conn: Executes,
    job_id: uuid.UUID,
    values: Mapping[str, Any],
    spend: Spend,
    notifications: Sequence[Notification],
    transports: Sequence[str],
    now: datetime,
) -> Any:
    """End an open job with its outcome and spend, and write its outbox rows with it; None
    (and nothing written) when the job is missing or has already ended."""
    keys = tuple(sorted(values))
    spent = spend.provider is not None
    priced = spent and spend.cost_usd is not None
    params: dict[str, Any] = {"job_id": job_id, "now": now, **values}
    if spent:
        params |= {"provider": spend.provider, "model": spend.model}
        params |= {f"add_{column}": getattr(spend.usage, column) for column in _SPEND_TOKENS}
    if priced:
        params["add_cost"] = spend.cost_usd
    notes = [outbox_values(note, transports, now) for note in notifications] if transports else []
    if conn.dialect.name != "postgresql":
        row = conn.execute(_ending(keys, spent, priced), params).first()
        if row is not None and notes:
            conn.execute(OUTBOX.insert(), notes)
        return row
    if not notes:
        return conn.execute(_ending(keys, spent, priced), params).first()
    for i, note in enumerate(notes):
        params |= {f"n{i}_{column}": value for column, value in note.items()}
    return conn.execute(_finish_with_outbox(keys, spent, priced, len(notes)), params).first()


def outbox_values(note: Notification, transports: Sequence[str], now: datetime) -> dict[str, Any]:
    return {
        "id": note.id,
        "job_id": note.job_id,
        "event": note.event,
        "user_id": note.user_id,
        "payload": dict(note.data),
        "pending_transports": list(transports),
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
    }


_TEXT_ARRAY = postgresql.ARRAY(Text())
# jsonb - text[]: the array without those strings.
_LEFT = OUTBOX.c.pending_transports.op("-", return_type=JSONB)(
    cast(bindparam("transports", type_=_TEXT_ARRAY), _TEXT_ARRAY)
)
MARK_SENT_PG = (
    update(OUTBOX)
    .where(
        OUTBOX.c.id == func.any(bindparam("ids", type_=postgresql.ARRAY(postgresql.UUID()))),
        OUTBOX.c.delivered_at.is_(None),
    )
    .values(
        pending_transports=_LEFT,
        delivered_at=case(
            (
                func.jsonb_array_length(_LEFT) == 0,
                bindparam("now", type_=OUTBOX.c.delivered_at.type),
            ),
            else_=OUTBOX.c.delivered_at,
        ),
    )
)


def mark_sent(
    conn: Executes, event_ids: Sequence[uuid.UUID], transports: Sequence[str], now: datetime
) -> None:
    """Take `transports` off these notifications' pending list; a notification with none left
    is delivered. One atomic UPDATE on PostgreSQL: no row lock is read first, and a concurrent
    deliverer marking another transport loses nothing."""
    if not event_ids or not transports:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(
            MARK_SENT_PG, {"ids": list(event_ids), "transports": list(transports), "now": now}
        )
        return
    assert isinstance(conn, Connection)  # SQLite runs through SQLAlchemy (Database.run_direct)
    rows = conn.execute(
        select(OUTBOX.c.id, OUTBOX.c.pending_transports).where(
            OUTBOX.c.id.in_(event_ids), OUTBOX.c.delivered_at.is_(None)
        )
    ).all()
    for event_id, pending in rows:
        still = [t for t in pending if t not in transports]
        conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id == event_id)
            .values(pending_transports=still, delivered_at=None if still else now)
        )


# --- the reaper's claims ----------------------------------------------------------------------
# Every housekeeping leader runs them every couple of seconds, mostly finding nothing: one
# statement each (pick with FOR UPDATE SKIP LOCKED, mark, return), built once.


def _claim(*where: ColumnElement[bool], **values: Any) -> Any:
    pick = (
        select(JOBS.c.id)
        .where(*where)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return (
        update(JOBS)
        .where(JOBS.c.id.in_(pick))
        .values(**values)
        .returning(JOBS.c.id, JOBS.c.feature)
    )


_NOW = bindparam("now", type_=JOBS.c.lease_until.type)
_CLAIM = bindparam("claim", type_=JOBS.c.lease_until.type)
# Runners that died: their lease ran out. The dead owner's lease is dropped, so the re-sent task
# may take the job; the claim keeps the next pass from sending it again meanwhile.
CLAIM_ORPHANS = _claim(
    JOBS.c.status == "running", JOBS.c.lease_until < _NOW, lease_owner=None, lease_until=_CLAIM
)
# Retries whose countdown is long past (the retry message was lost).
CLAIM_OVERDUE = _claim(JOBS.c.status == "queued", JOBS.c.retry_at < _NOW, retry_at=_CLAIM)
# Queued, never run and never sent again: only its first message stands for it. Claimed, it
# gets a `retry_at` that keeps the stale-queued check away, then the overdue check covers it.
NEVER_STARTED = (JOBS.c.status == "queued", JOBS.c.attempts == 0, JOBS.c.retry_at.is_(None))
# ... created before `now` (the reaper's stale-queued check)
CLAIM_NEVER_STARTED = _claim(*NEVER_STARTED, JOBS.c.created_at < _NOW, retry_at=_CLAIM)
# ... among these ids (the reaper's lost-message check, reaper.lost_messages)
CLAIM_NEVER_STARTED_IDS = _claim(
    *NEVER_STARTED, JOBS.c.id.in_(bindparam("ids", expanding=True)), retry_at=_CLAIM
)
