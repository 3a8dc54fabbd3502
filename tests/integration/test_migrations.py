"""An upgrade loses nothing: a database written by the previous release, rows and all, upgrades
to the new head and its old rows read back unchanged."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.services import temporary_database
from vamu_tasks.domain import NewJob
from vamu_tasks.store.chat import SqlAlchemyChatStore
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.store.repository import Database, SqlAlchemyJobStore

pytestmark = pytest.mark.integration

JOB = uuid.UUID("00000000-0000-4000-8000-000000000001")
USER_MESSAGE = uuid.UUID("00000000-0000-4000-8000-000000000002")
REPLY = uuid.UUID("00000000-0000-4000-8000-000000000003")


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vamu.db'}"
        return
    with temporary_database("vamu_migration") as pg_url:
        yield pg_url


def sql(statement: str) -> sa.TextClause:
    """Raw SQL with uuids bound as SQLAlchemy stores them (native on PostgreSQL, hex on SQLite)."""
    clause = sa.text(statement)
    uuids = [name for name in ("id", "job") if f":{name}" in statement]
    return clause.bindparams(*(sa.bindparam(name, type_=sa.Uuid()) for name in uuids))


def write_0006_rows(url: str) -> None:
    """A finished chat job as release 0006 wrote it: the row, the conversation, two messages."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sql(
                "INSERT INTO ai_jobs (id, feature, user_id, status, request, result, attempts, "
                "source) VALUES (:id, 'chatbot', 'u-ada', 'succeeded', :request, :result, 1, "
                "'cli')"
            ),
            {
                "id": JOB,
                "request": '{"userId": "u-ada", "conversationId": "c-1", "message": "Hi"}',
                "result": json.dumps({"reply": "Hello!", "messageId": str(REPLY)}),
            },
        )
        conn.execute(
            sa.text(
                "INSERT INTO chat_conversations (id, user_id, last_seq) VALUES ('c-1', 'u-ada', 2)"
            )
        )
        for message_id, role, content, seq in [
            (USER_MESSAGE, "user", "Hi", 1),
            (REPLY, "assistant", "Hello!", 2),
        ]:
            conn.execute(
                sql(
                    "INSERT INTO chat_messages (id, conversation_id, job_id, role, content, seq) "
                    "VALUES (:id, 'c-1', :job, :role, :content, :seq)"
                ),
                {"id": message_id, "job": JOB, "role": role, "content": content, "seq": seq},
            )
    engine.dispose()


def test_upgrading_from_0006_keeps_chat_messages_and_reads_old_replies_as_complete(url: str):
    upgrade(url, "0006")
    write_0006_rows(url)

    upgrade(url)

    db = Database.from_url(url)
    chats = SqlAlchemyChatStore(db)
    reply = chats.reply_for(JOB)
    history = chats.history("c-1", before_seq=3, limit=10)
    db.close()
    assert reply is not None
    assert (reply.id, reply.role, reply.content, reply.seq) == (REPLY, "assistant", "Hello!", 2)
    # Written before finish reasons were stored: no reason, which the chatbot reports as "stop".
    assert reply.finish_reason is None
    assert [(m.id, m.role, m.content, m.seq) for m in history] == [
        (USER_MESSAGE, "user", "Hi", 1),
        (REPLY, "assistant", "Hello!", 2),
    ]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        status, attempts = conn.execute(
            sql("SELECT status, attempts FROM ai_jobs WHERE id = :id"), {"id": JOB}
        ).one()
    engine.dispose()
    assert (status, attempts) == ("succeeded", 1)


def test_upgrading_from_0007_keeps_job_rows_and_leaves_their_cache_counts_unknown(url: str):
    upgrade(url, "0007")
    write_0006_rows(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sql("UPDATE ai_jobs SET input_tokens = 900, output_tokens = 40 WHERE id = :id"),
            {"id": JOB},
        )
    engine.dispose()

    upgrade(url)

    db = Database.from_url(url)
    store = SqlAlchemyJobStore(db, transports=[])
    job = store.get_job(JOB)
    db.close()
    assert job is not None
    assert (job.status, job.input_tokens, job.output_tokens) == ("succeeded", 900, 40)
    assert job.result == {"reply": "Hello!", "messageId": str(REPLY)}
    assert (job.cache_read_tokens, job.cache_write_tokens) == (None, None)


def test_a_reply_stored_after_the_upgrade_keeps_its_finish_reason(url: str):
    upgrade(url, "0006")
    write_0006_rows(url)
    upgrade(url)
    job = uuid.UUID("00000000-0000-4000-8000-000000000009")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sql(
                "INSERT INTO ai_jobs (id, feature, user_id, status, request, attempts, source) "
                "VALUES (:id, 'chatbot', 'u-ada', 'running', '{}', 1, 'cli')"
            ),
            {"id": job},
        )
    engine.dispose()
    db = Database.from_url(url)
    chats = SqlAlchemyChatStore(db)

    chats.add_reply(job, "c-1", "Friday: the jazz", "length")
    stored = chats.reply_for(job)
    db.close()

    assert stored is not None
    assert (stored.content, stored.finish_reason, stored.seq) == ("Friday: the jazz", "length", 3)


def test_upgrading_from_0008_keeps_job_rows_unbatched_and_then_takes_batched_jobs(url: str):
    upgrade(url, "0008")
    write_0006_rows(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sql("UPDATE ai_jobs SET cache_read_tokens = 100, cost_usd = 0.0012 WHERE id = :id"),
            {"id": JOB},
        )
    engine.dispose()

    upgrade(url)

    db = Database.from_url(url)
    store = SqlAlchemyJobStore(db, transports=[])
    old = store.get_job(JOB)
    new, _ = store.create_job(
        NewJob(
            feature="inspiration",
            user_id="u-ada",
            request={"userId": "u-ada", "deliverBy": "2026-12-03T08:00:00Z"},
            source="cli",
            deliver_by=datetime(2026, 12, 3, 8, tzinfo=UTC),
        )
    )
    db.close()
    assert old is not None
    assert (old.status, old.cache_read_tokens, str(old.cost_usd)) == ("succeeded", 100, "0.001200")
    assert old.result == {"reply": "Hello!", "messageId": str(REPLY)}
    assert (old.deliver_by, old.batch_id) == (None, None)
    # The new status is allowed by the upgraded check constraint.
    assert (new.status, new.deliver_by) == ("batched", datetime(2026, 12, 3, 8, tzinfo=UTC))
