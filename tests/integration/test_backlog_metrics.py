"""The backlog gauges (queued jobs, their wait, undelivered notifications) on real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.conftest import Stack
from tests.support.services import free_port, scrape, temporary_database
from vamu_tasks.metrics import BacklogCollector
from vamu_tasks.store.backlog import backlog_engine, backlog_queries, read_backlog
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.store.models import AiJob, NotificationOutbox
from vamu_tasks.store.repository import GIVEN_UP, Database

pytestmark = pytest.mark.integration

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
QUEUES = ["inspiration", "chatbot", "agent"]


@pytest.fixture(scope="module")
def db_url() -> Iterator[str]:
    with temporary_database("vamu_backlog") as url:
        upgrade(url)
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database.from_url(db_url, pool_size=2)
    with database.transaction() as session:
        session.execute(sa.delete(NotificationOutbox))
        session.execute(sa.delete(AiJob))
    yield database
    database.close()


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def job(feature: str, status: str = "queued", *, created_s: float, attempts: int = 0,
        retry_at: datetime | None = None) -> AiJob:
    return AiJob(id=uuid.uuid4(), feature=feature, user_id="u-ada", status=status, request={},
                 source="cli", attempts=attempts, created_at=ago(created_s), retry_at=retry_at)


def note(job_id: uuid.UUID, *, created_s: float, delivered: bool = False,
         given_up: bool = False) -> NotificationOutbox:
    return NotificationOutbox(
        id=uuid.uuid4(), job_id=job_id, event="inspiration-ready", user_id="u-ada", payload={},
        pending_transports=[] if delivered else ["webhook"], attempts=0,
        created_at=ago(created_s), next_attempt_at=GIVEN_UP if given_up else ago(created_s),
        delivered_at=ago(1) if delivered else None)


def gauges(collector: BacklogCollector) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(s.name, tuple(s.labels.values())): s.value
            for family in collector.collect() for s in family.samples}


def gauges_of(url: str) -> dict[tuple[str, tuple[str, ...]], float]:
    """One scrape of the collector the notify worker builds, reading the database at `url`."""
    engine = backlog_engine(url)
    try:
        return gauges(BacklogCollector(lambda: read_backlog(engine),
                                       lambda feature: feature, QUEUES, now=lambda: NOW))
    finally:
        engine.dispose()


def test_the_gauges_count_queued_jobs_and_age_the_longest_waiting_one_due_to_run(db, db_url):
    done = job("inspiration", "succeeded", created_s=3600)
    with db.transaction() as session:
        session.add_all([
            job("inspiration", created_s=600),  # never started: waits since it was created
            job("inspiration", created_s=30),
            # A retry counting down is queued but not waiting for a worker...
            job("agent", created_s=7200, attempts=1, retry_at=NOW + timedelta(seconds=60)),
            # ...a retry whose countdown ended 90 s ago waits since then, not since its creation.
            job("chatbot", created_s=7200, attempts=2, retry_at=ago(90)),
            job("chatbot", "running", created_s=5000, attempts=1),
            done,
        ])
    with db.transaction() as session:
        session.add_all([
            note(done.id, created_s=120),
            note(done.id, created_s=40),
            note(done.id, created_s=90_000, given_up=True),
            note(done.id, created_s=999, delivered=True),
        ])

    values = gauges_of(db_url)

    assert values == {
        ("vamu_store_up", ()): 1,
        ("vamu_queued_jobs", ("inspiration",)): 2,
        ("vamu_queued_jobs", ("chatbot",)): 1,
        ("vamu_queued_jobs", ("agent",)): 1,
        ("vamu_queue_oldest_job_age_seconds", ("inspiration",)): 600,
        ("vamu_queue_oldest_job_age_seconds", ("chatbot",)): 90,
        ("vamu_queue_oldest_job_age_seconds", ("agent",)): 0,
        ("vamu_outbox_undelivered", ("pending",)): 2,
        ("vamu_outbox_undelivered", ("given_up",)): 1,
        ("vamu_outbox_oldest_pending_age_seconds", ()): 120,
    }


def test_an_unreachable_database_reads_as_store_down_and_the_scrape_still_answers():
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"

    assert gauges_of(url) == {("vamu_store_up", ()): 0}


@pytest.mark.parametrize("query", ["jobs", "outbox"])
def test_each_backlog_query_is_answered_from_an_index(db, db_url, query):
    statement = dict(zip(["jobs", "outbox"], backlog_queries(), strict=True))[query]
    compiled = statement.compile(db.engine, compile_kwargs={"literal_binds": True})
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        # An empty table is read whole whatever the indexes; forbid that to see whether an
        # index can answer the query at all.
        conn.execute(sa.text("SET enable_seqscan = off"))
        plan = "\n".join(row[0] for row in conn.execute(sa.text(f"EXPLAIN {compiled}")))
    engine.dispose()

    assert "Index" in plan and "Seq Scan" not in plan, plan


def test_the_notify_worker_serves_the_backlog_gauges(stack: Stack):
    # The stack's worker consumes the notify queue, so its /metrics carries them.
    samples = scrape(int(stack.env["VAMU_METRICS_PORT"]))

    assert samples[("vamu_store_up", ())] == 1
    for queue in QUEUES:
        assert ("vamu_queue_oldest_job_age_seconds", (("queue", queue),)) in samples
    assert ("vamu_outbox_undelivered", (("state", "given_up"),)) in samples
