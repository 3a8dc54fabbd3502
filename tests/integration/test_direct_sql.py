"""The job path's statements sent straight to psycopg (store/direct.py) read and write what
SQLAlchemy would, column by column, and refuse what they do not support."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from vamu_tasks.domain import NewJob, Notification, Spend, Usage
from vamu_tasks.store import statements
from vamu_tasks.store.direct import DirectStatement
from vamu_tasks.store.repository import SqlAlchemyJobStore


@pytest.fixture
def store(pg_url: str) -> Iterator[SqlAlchemyJobStore]:
    store = SqlAlchemyJobStore.from_url(pg_url, transports=["socketio", "webhook"])
    yield store
    store.close()


def both_ways(store: SqlAlchemyJobStore, statement: Any, params: dict[str, Any]) -> tuple[Any, Any]:
    """The same statement's first row through SQLAlchemy and through psycopg directly."""
    by_sqlalchemy = store.db.run(lambda conn: conn.execute(statement, params).first())
    direct = store.db.run_direct(lambda conn: conn.execute(statement, params).first())
    return by_sqlalchemy, direct


def test_every_column_of_a_job_reads_back_through_psycopg_as_through_sqlalchemy(
    store: SqlAlchemyJobStore,
) -> None:
    first, _ = store.create_job(NewJob("inspiration", "u-ada", {"userId": "u-ada"}, "cli"))
    job, created = store.create_job(
        NewJob(
            "inspiration",
            "u-ada",
            {"userId": "u-ada", "hint": "café ☕", "nested": {"a": [1, 2.5, None]}},
            "bullmq",
            source_ref=f"ref-{uuid.uuid4().hex}",
            rerun_of=first.id,
            rerun_reason="operator asked",
            requested_by="ops@vamu",
            notify=False,
        )
    )
    assert created
    store.start_attempt(job.id, "host:1:a", 60.0)
    spend = Spend(
        "openai",
        "gpt-5-mini",
        Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1024, cache_write_tokens=7),
        Decimal("0.000912"),
    )
    store.succeed(job.id, {"ideas": [{"title": "Jazz ☕", "score": 0.5}], "none": None}, spend, [])

    by_sqlalchemy, direct = both_ways(store, statements.GET_JOB, {"job_id": job.id})

    assert by_sqlalchemy is not None and direct is not None
    assert direct._asdict() == dict(by_sqlalchemy._mapping)
    types = {name: type(value) for name, value in direct._asdict().items()}
    assert types["cost_usd"] is Decimal and types["rerun_of"] is uuid.UUID
    assert types["result"] is dict and types["finished_at"] is datetime
    assert direct.finished_at.tzinfo is not None


def test_values_written_through_psycopg_read_back_as_written(store: SqlAlchemyJobStore) -> None:
    job, _ = store.create_job(NewJob("inspiration", "u-ada", {"userId": "u-ada"}, "cli"))
    store.start_attempt(job.id, "host:1:a", 60.0)
    note = Notification(
        uuid.uuid4(), "inspiration-ready", "u-ada", job.id, {"jobId": str(job.id), "n": [1, "☕"]}
    )
    store.succeed(job.id, {"ideas": [], "nested": {"deep": [True, None]}}, Spend(), [note])

    read = store.get_job(job.id)
    written = store.db.run(
        lambda conn: conn.execute(
            sa.select(statements.OUTBOX).where(statements.OUTBOX.c.id == note.id)
        ).one()
    )

    assert read is not None and read.result == {"ideas": [], "nested": {"deep": [True, None]}}
    assert written.payload == {"jobId": str(job.id), "n": [1, "☕"]}
    assert written.pending_transports == ["socketio", "webhook"]
    assert written.created_at.tzinfo is not None and written.created_at <= datetime.now(UTC)


def test_a_statement_with_an_expanding_parameter_is_refused_when_compiled(
    store: SqlAlchemyJobStore,
) -> None:
    with pytest.raises(ValueError, match="expands"):
        DirectStatement.compile(statements.CLAIM_NEVER_STARTED_IDS, store.db.engine.dialect)


def test_many_parameter_sets_are_refused(store: SqlAlchemyJobStore) -> None:
    with pytest.raises(TypeError, match="one set of parameters"):
        store.db.run_direct(
            lambda conn: conn.execute(statements.GET_JOB, [{"job_id": uuid.uuid4()}])
        )


def test_a_pooled_connection_goes_back_to_the_pool_out_of_autocommit(
    store: SqlAlchemyJobStore,
) -> None:
    store.db.run_direct(lambda conn: conn.execute(statements.GET_JOB, {"job_id": uuid.uuid4()}))

    # The ORM's next transaction on that connection must be a transaction: its rollback undoes.
    job, _ = store.create_job(NewJob("inspiration", "u-ada", {"userId": "u-ada"}, "cli"))
    with store.db.engine.connect() as conn:
        assert conn.connection.driver_connection.autocommit is False  # type: ignore[union-attr]
        conn.execute(
            sa.update(statements.JOBS).where(statements.JOBS.c.id == job.id).values(user_id="u-bob")
        )
        conn.rollback()
    read = store.get_job(job.id)
    assert read is not None and read.user_id == "u-ada"
