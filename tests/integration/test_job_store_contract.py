"""The `JobStore` contract, run against the in-memory fake, SQLite and PostgreSQL alike."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from vamu_tasks.domain import JobRecord, NewJob, Notification, Spend, Usage, event_id_for
from vamu_tasks.errors import StoreUnavailable
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.store.models import NotificationOutbox
from vamu_tasks.store.repository import SqlAlchemyJobStore
from vamu_tasks.testing.memory import InMemoryJobStore

TRANSPORTS = ("socketio", "webhook")
BACKENDS = ["memory", "sqlite", "postgres"]
Store = InMemoryJobStore | SqlAlchemyJobStore
REQUEST = {"userId": "u-ada", "count": 3, "hint": "café concerts ☕", "nested": {"a": [1, 2]}}
SPEND = Spend(
    "openai", "gpt-5-mini", Usage(input_tokens=1200, output_tokens=300), Decimal("0.0009")
)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield InMemoryJobStore(transports=TRANSPORTS)
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'vamu.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("pg_url")
    sql_store = SqlAlchemyJobStore.from_url(url, transports=TRANSPORTS)
    yield sql_store
    sql_store.close()


@pytest.fixture
def backend(request: pytest.FixtureRequest, store: Store) -> str:
    name: str = request.node.callspec.params["store"]
    return name


@pytest.fixture
def sql_store(store: Store) -> SqlAlchemyJobStore:
    if not isinstance(store, SqlAlchemyJobStore):
        pytest.skip("database-only behaviour")
    return store


def ref() -> str:
    return f"ref-{uuid.uuid4().hex}"


def new_job(
    store: Store, *, source: str = "bullmq", source_ref: str | None = None, **kwargs: Any
) -> JobRecord:
    job, created = store.create_job(
        NewJob("inspiration", "u-ada", REQUEST, source, source_ref=source_ref, **kwargs)  # type: ignore[arg-type]
    )
    assert created
    return job


def started_job(store: Store) -> JobRecord:
    job = new_job(store, source_ref=ref())
    return store.start_attempt(job.id)


def ready(job: JobRecord, event: str = "inspiration-ready") -> Notification:
    data = {"jobId": str(job.id), "feature": "inspiration", "status": "succeeded"}
    return Notification(event_id_for(job.id, event), event, job.user_id, job.id, data)


def get(store: Store, job_id: uuid.UUID) -> JobRecord:
    job = store.get_job(job_id)
    assert job is not None
    return job


def same_row(a: JobRecord, b: JobRecord) -> bool:
    """Equal in everything but the timestamps (compared in their own tests)."""
    skip = {"created_at", "started_at", "finished_at"}
    return all(getattr(a, f) == getattr(b, f) for f in a.__dataclass_fields__ if f not in skip)


# --- jobs -------------------------------------------------------------------------------------


def test_a_created_job_reads_back_queued_with_its_request(store: Store) -> None:
    source_ref = ref()
    parent = new_job(store, source="cli")

    job, created = store.create_job(
        NewJob("inspiration", "u-ada", REQUEST, "bullmq", source_ref=source_ref, rerun_of=parent.id)
    )

    assert created
    read = get(store, job.id)
    assert same_row(read, job)
    assert (read.status, read.feature, read.user_id, read.attempts) == (
        "queued",
        "inspiration",
        "u-ada",
        0,
    )
    assert read.request == REQUEST
    assert (read.source, read.source_ref, read.rerun_of) == ("bullmq", source_ref, parent.id)
    assert read.result is None and read.error_kind is None and read.started_at is None
    assert (read.input_tokens, read.output_tokens, read.cost_usd) == (None, None, None)


def test_an_unknown_job_id_reads_as_none(store: Store) -> None:
    assert store.get_job(uuid.uuid4()) is None


def test_the_same_source_and_source_ref_twice_returns_the_first_job(store: Store) -> None:
    source_ref = ref()
    first = new_job(store, source_ref=source_ref)

    again, created = store.create_job(
        NewJob("inspiration", "u-ada", {"userId": "u-ada", "count": 9}, "bullmq", source_ref)
    )

    assert not created
    assert same_row(again, first)
    assert again.request == REQUEST


def test_the_same_source_ref_from_another_source_is_another_job(store: Store) -> None:
    source_ref = ref()
    first = new_job(store, source="bullmq", source_ref=source_ref)

    other = new_job(store, source="api", source_ref=source_ref)

    assert other.id != first.id
    assert get(store, other.id).source == "api"


def test_a_job_can_be_found_by_its_source_and_source_ref(store: Store) -> None:
    source_ref = ref()
    job = new_job(store, source="bullmq", source_ref=source_ref)

    found = store.find_job("bullmq", source_ref)

    assert found is not None and same_row(found, job)
    assert store.find_job("api", source_ref) is None
    assert store.find_job("bullmq", ref()) is None


def test_jobs_without_a_source_ref_never_collide(store: Store) -> None:
    ids = {new_job(store, source="cli").id for _ in range(3)}

    assert len(ids) == 3
    assert all(get(store, job_id).source_ref is None for job_id in ids)


def test_each_attempt_marks_the_job_running_and_counts(store: Store) -> None:
    job = new_job(store, source_ref=ref())

    first = store.start_attempt(job.id)
    second = store.start_attempt(job.id)

    assert (first.status, first.attempts) == ("running", 1)
    assert (second.status, second.attempts) == ("running", 2)
    read = get(store, job.id)
    assert read.attempts == 2
    assert read.started_at is not None


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_an_attempt_on_an_ended_job_changes_nothing(store: Store, outcome: str) -> None:
    job = started_job(store)
    if outcome == "succeeded":
        store.succeed(job.id, {"ideas": []}, Spend(), [])
    else:
        store.fail(job.id, "timeout", "too slow", Spend(), [])

    again = store.start_attempt(job.id)

    assert (again.status, again.attempts) == (outcome, 1)
    assert (get(store, job.id).status, get(store, job.id).attempts) == (outcome, 1)


def test_an_attempt_on_an_unknown_job_raises_lookup_error(store: Store) -> None:
    with pytest.raises(LookupError):
        store.start_attempt(uuid.uuid4())


def test_requeue_puts_a_running_job_back_to_queued_noting_why(store: Store) -> None:
    job = started_job(store)

    store.requeue(job.id, "rate_limited", "OpenAI 429; retrying in 30 s")

    read = get(store, job.id)
    assert (read.status, read.error_kind, read.error_message) == (
        "queued",
        "rate_limited",
        "OpenAI 429; retrying in 30 s",
    )
    assert read.attempts == 1
    assert store.start_attempt(job.id).attempts == 2


def test_requeue_of_an_ended_job_changes_nothing(store: Store) -> None:
    job = started_job(store)
    store.succeed(job.id, {"ideas": []}, Spend(), [])

    store.requeue(job.id, "rate_limited", "late retry")

    read = get(store, job.id)
    assert (read.status, read.error_kind, read.error_message) == ("succeeded", None, None)


def test_succeed_commits_the_result_clears_the_last_error_and_adds_its_notification(
    store: Store,
) -> None:
    job = started_job(store)
    store.requeue(job.id, "timeout", "first attempt timed out")
    store.start_attempt(job.id)
    note = ready(job)

    done = store.succeed(job.id, {"ideas": [{"title": "Jazz"}]}, SPEND, [note])

    read = get(store, job.id)
    assert same_row(read, done)
    assert (read.status, read.result) == ("succeeded", {"ideas": [{"title": "Jazz"}]})
    assert (read.error_kind, read.error_message) == (None, None)
    assert read.finished_at is not None
    assert store.pending_notifications(job.id) == [note.id]


@pytest.mark.parametrize("second", ["succeed", "fail"])
def test_a_job_ends_once_and_a_second_ending_changes_nothing(store: Store, second: str) -> None:
    job = started_job(store)
    note = ready(job)
    store.succeed(job.id, {"ideas": ["first"]}, SPEND, [note])
    late = ready(job, "late-event")

    if second == "succeed":
        returned = store.succeed(job.id, {"ideas": ["second"]}, SPEND, [late])
    else:
        returned = store.fail(job.id, "internal", "late failure", SPEND, [late])

    read = get(store, job.id)
    assert (returned.status, read.status) == ("succeeded", "succeeded")
    assert read.result == {"ideas": ["first"]}
    assert read.error_kind is None
    assert (read.input_tokens, read.output_tokens, read.cost_usd) == (1200, 300, Decimal("0.0009"))
    assert store.pending_notifications(job.id) == [note.id]
    assert store.get_notification(late.id) is None


def test_spend_is_recorded_as_provider_tokens_and_cost(store: Store) -> None:
    job = started_job(store)
    spend = Spend("anthropic", "claude-sonnet-4-6", Usage(5000, 700, 4000, 0), Decimal("0.017700"))

    store.succeed(job.id, {"ideas": []}, spend, [])

    read = get(store, job.id)
    assert (read.provider, read.model) == ("anthropic", "claude-sonnet-4-6")
    assert (read.input_tokens, read.output_tokens) == (5000, 700)
    assert read.cost_usd == Decimal("0.0177")


def test_spend_of_an_unpriced_model_keeps_tokens_without_cost(store: Store) -> None:
    job = started_job(store)

    store.fail(job.id, "timeout", "slow", Spend("openai", "my-finetune", Usage(10, 0), None), [])

    read = get(store, job.id)
    assert (read.model, read.input_tokens, read.output_tokens, read.cost_usd) == (
        "my-finetune",
        10,
        0,
        None,
    )


def test_a_job_that_made_no_llm_call_has_no_spend(store: Store) -> None:
    job = started_job(store)

    store.fail(job.id, "user_not_found", "no such user", Spend(), [])

    read = get(store, job.id)
    assert (read.provider, read.input_tokens, read.cost_usd) == (None, None, None)


def test_fail_records_the_kind_and_message_and_its_notification(store: Store) -> None:
    job = started_job(store)
    note = Notification(
        event_id_for(job.id, "ai-job-failed"),
        "ai-job-failed",
        job.user_id,
        job.id,
        {"jobId": str(job.id), "feature": "inspiration", "errorKind": "schema_invalid"},
    )

    done = store.fail(job.id, "schema_invalid", "bad JSON twice", SPEND, [note])

    read = get(store, job.id)
    assert same_row(read, done)
    assert (read.status, read.error_kind, read.error_message) == (
        "failed",
        "schema_invalid",
        "bad JSON twice",
    )
    assert read.result is None
    assert read.finished_at is not None
    assert store.get_notification(note.id) == (note, list(TRANSPORTS))


def test_an_ending_on_an_unknown_job_raises_lookup_error(store: Store) -> None:
    with pytest.raises(LookupError):
        store.succeed(uuid.uuid4(), {}, Spend(), [])


def test_the_timestamps_of_a_job_are_timezone_aware(store: Store) -> None:
    job = started_job(store)
    store.succeed(job.id, {"ideas": []}, Spend(), [])

    read = get(store, job.id)

    stamps = [read.created_at, read.started_at, read.finished_at]
    assert all(s is not None and s.utcoffset() is not None for s in stamps)
    now = datetime.now(UTC)
    assert all(now - timedelta(minutes=1) < s <= now for s in stamps)  # type: ignore[operator]
    assert read.created_at <= read.started_at <= read.finished_at  # type: ignore[operator]


# --- outbox -----------------------------------------------------------------------------------


def test_a_committed_notification_is_pending_for_every_transport(store: Store) -> None:
    job = started_job(store)
    note = ready(job)

    store.succeed(job.id, {"ideas": []}, Spend(), [note])

    assert store.pending_notifications(job.id) == [note.id]
    assert store.get_notification(note.id) == (note, ["socketio", "webhook"])


def test_pending_notifications_lists_only_this_jobs_notifications(store: Store) -> None:
    job, other = started_job(store), started_job(store)
    store.succeed(job.id, {"ideas": []}, Spend(), [ready(job)])
    store.succeed(other.id, {"ideas": []}, Spend(), [ready(other)])

    assert store.pending_notifications(job.id) == [ready(job).id]
    assert store.pending_notifications(uuid.uuid4()) == []


def test_an_unknown_notification_reads_as_none(store: Store) -> None:
    assert store.get_notification(uuid.uuid4()) is None


def test_a_notification_stays_pending_until_every_transport_has_it(store: Store) -> None:
    job = started_job(store)
    note = ready(job)
    store.succeed(job.id, {"ideas": []}, Spend(), [note])

    store.mark_delivered(note.id, "webhook")

    assert store.get_notification(note.id) == (note, ["socketio"])
    assert store.pending_notifications(job.id) == [note.id]

    store.mark_delivered(note.id, "socketio")

    assert store.get_notification(note.id) == (note, [])
    assert store.pending_notifications(job.id) == []


def test_marking_a_transport_delivered_twice_or_an_unknown_notification_is_harmless(
    store: Store,
) -> None:
    job = started_job(store)
    note = ready(job)
    store.succeed(job.id, {"ideas": []}, Spend(), [note])

    store.mark_delivered(note.id, "webhook")
    store.mark_delivered(note.id, "webhook")
    store.mark_delivered(uuid.uuid4(), "webhook")

    assert store.get_notification(note.id) == (note, ["socketio"])


def test_a_delivery_failure_keeps_the_notification_pending(store: Store) -> None:
    job = started_job(store)
    note = ready(job)
    store.succeed(job.id, {"ideas": []}, Spend(), [note])

    store.record_delivery_failure(note.id, "webhook: answered 503", retry_in_s=30)
    store.record_delivery_failure(uuid.uuid4(), "nobody", retry_in_s=30)

    assert store.get_notification(note.id) == (note, ["socketio", "webhook"])
    assert store.pending_notifications(job.id) == [note.id]


# --- database-only ----------------------------------------------------------------------------


def test_claiming_stale_notifications_returns_only_old_undelivered_ones_once(
    sql_store: SqlAlchemyJobStore,
) -> None:
    store = sql_store
    delivered, stale, retry_later = started_job(store), started_job(store), started_job(store)
    for job in (delivered, stale, retry_later):
        store.succeed(job.id, {"ideas": []}, Spend(), [ready(job)])
    for transport in TRANSPORTS:
        store.mark_delivered(ready(delivered).id, transport)
    store.record_delivery_failure(ready(retry_later).id, "webhook: 503", retry_in_s=3600)
    time.sleep(0.3)
    fresh = started_job(store)
    store.succeed(fresh.id, {"ideas": []}, Spend(), [ready(fresh)])

    claimed = store.claim_stale_notifications(older_than_s=0.2, limit=100_000)
    again = store.claim_stale_notifications(older_than_s=0.2, limit=100_000)

    assert ready(stale).id in claimed
    assert not {ready(delivered).id, ready(retry_later).id, ready(fresh).id} & set(claimed)
    assert ready(stale).id not in again


def test_a_notification_undelivered_for_too_long_is_given_up_once_and_no_longer_swept(
    sql_store: SqlAlchemyJobStore,
) -> None:
    store = sql_store
    old, delivered = started_job(store), started_job(store)
    for job in (old, delivered):
        store.succeed(job.id, {"ideas": []}, Spend(), [ready(job)])
    for transport in TRANSPORTS:
        store.mark_delivered(ready(delivered).id, transport)
    store.record_delivery_failure(ready(old).id, "webhook: 503", retry_in_s=0)
    time.sleep(0.3)
    fresh = started_job(store)
    store.succeed(fresh.id, {"ideas": []}, Spend(), [ready(fresh)])

    first = store.give_up_notifications(older_than_s=0.2)
    second = store.give_up_notifications(older_than_s=0.2)
    time.sleep(0.3)
    swept = store.claim_stale_notifications(older_than_s=0.2, limit=100_000)

    assert first >= 1 and second == 0  # the fixture database may hold older ones too
    assert ready(old).id not in swept
    assert ready(fresh).id in swept  # young enough to keep trying
    with store.db.transaction() as session:
        row = session.get(NotificationOutbox, ready(old).id)
        assert row is not None and row.delivered_at is None
        assert row.last_error == "given up: undelivered after 0.2s; webhook: 503"


def test_reopening_notifications_picks_a_jobs_undelivered_ones_or_every_given_up_one(
    sql_store: SqlAlchemyJobStore,
) -> None:
    store = sql_store
    gone, pending, delivered = started_job(store), started_job(store), started_job(store)
    for job in (gone, pending, delivered):
        store.succeed(job.id, {"ideas": []}, Spend(), [ready(job)])
    for transport in TRANSPORTS:
        store.mark_delivered(ready(delivered).id, transport)
    time.sleep(0.3)
    store.give_up_notifications(older_than_s=0.2)  # all three are old enough; two undelivered

    given_up = store.reopen_notifications(given_up_only=True, limit=100_000)
    by_job = store.reopen_notifications([pending.id, delivered.id])

    assert ready(gone).id in given_up and ready(pending).id in given_up
    assert ready(delivered).id not in given_up
    assert by_job == [ready(pending).id]
    time.sleep(0.3)
    # Due again: the sweeper sees them as it sees any stale notification.
    assert ready(gone).id in store.claim_stale_notifications(older_than_s=0.2, limit=100_000)


def test_a_claimed_notification_is_claimable_again_once_the_claim_is_old(
    sql_store: SqlAlchemyJobStore,
) -> None:
    store = sql_store
    job = started_job(store)
    store.succeed(job.id, {"ideas": []}, Spend(), [ready(job)])
    time.sleep(0.3)
    assert ready(job).id in store.claim_stale_notifications(older_than_s=0.2, limit=100_000)

    time.sleep(0.3)

    assert ready(job).id in store.claim_stale_notifications(older_than_s=0.2, limit=100_000)


def test_an_unreachable_database_raises_store_unavailable(
    sql_store: SqlAlchemyJobStore, backend: str, tmp_path: Path
) -> None:
    url = {
        "sqlite": f"sqlite:///{tmp_path / 'missing-dir' / 'vamu.db'}",
        "postgres": "postgresql+psycopg://postgres@127.0.0.1:1/x",
    }[backend]
    unreachable = SqlAlchemyJobStore.from_url(url, transports=TRANSPORTS)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            unreachable.get_job(uuid.uuid4())
        with pytest.raises(StoreUnavailable):
            unreachable.create_job(NewJob("inspiration", "u-ada", REQUEST, "cli"))
        with pytest.raises(StoreUnavailable):
            unreachable.pending_notifications(uuid.uuid4())
    finally:
        unreachable.close()

    assert caught.value.retryable
    assert "Database unreachable" in caught.value.message


# --- the job path's single statements ----------------------------------------------------------


def test_marking_sent_takes_only_those_transports_off_and_delivers_when_none_are_left(
    store: Store,
) -> None:
    job = started_job(store)
    notes = [ready(job), ready(job, "agent-finished")]
    store.fail(job.id, "provider_error", "boom", Spend(), notes)

    store.mark_sent([note.id for note in notes], ["socketio"])

    assert [store.get_notification(note.id) for note in notes] == [
        (note, ["webhook"]) for note in notes
    ]
    store.mark_sent([notes[0].id], ["webhook", "socketio"])
    store.mark_sent([uuid.uuid4()], ["webhook"])

    assert store.get_notification(notes[0].id) == (notes[0], [])
    assert store.pending_notifications(job.id) == [notes[1].id]


def test_two_deliverers_marking_different_transports_at_once_lose_neither(
    sql_store: SqlAlchemyJobStore,
) -> None:
    # Each pair races: one deliverer marks socketio while another marks webhook.
    notes = []
    for _ in range(30):
        job = started_job(sql_store)
        notes.append(ready(job))
        sql_store.succeed(job.id, {"ideas": []}, Spend(), [notes[-1]])
    marks = [(note.id, [transport]) for note in notes for transport in TRANSPORTS]

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda mark: sql_store.mark_sent([mark[0]], mark[1]), marks))

    assert [sql_store.get_notification(note.id) for note in notes] == [(n, []) for n in notes]


def test_an_ending_with_two_notifications_writes_both_outbox_rows_once(store: Store) -> None:
    job = started_job(store)
    notes = [ready(job, "ai-job-failed"), ready(job, "agent-finished")]

    store.fail(job.id, "provider_error", "boom", SPEND, notes)
    store.fail(job.id, "provider_error", "again", SPEND, notes)

    assert sorted(store.pending_notifications(job.id)) == sorted(note.id for note in notes)
    assert get(store, job.id).cost_usd == SPEND.cost_usd


def test_a_pooled_connection_the_server_dropped_is_replaced_without_an_error(
    sql_store: SqlAlchemyJobStore, backend: str, pg_url: str
) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL closes connections; SQLite has none to lose")
    job = new_job(sql_store, source_ref=ref())
    pids = set()
    for _ in range(3):  # the pool hands its idle connections out in turn
        with sql_store.db.engine.connect() as conn:
            pids.add(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        # What a server restart does to the connections idle in the pool.
        for pid in pids:
            assert conn.execute(sa.text(f"SELECT pg_terminate_backend({pid})")).scalar_one()
    admin.dispose()

    started = sql_store.start_attempt(job.id, "host:1:a", 60.0)
    done = sql_store.succeed(job.id, {"ideas": []}, SPEND, [ready(job)])

    assert (started.status, started.attempts, done.status) == ("running", 1, "succeeded")
