"""`SqlAlchemyJobStore`: the job rows and the notification outbox on PostgreSQL or SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar, cast

import psycopg
from psycopg import Connection as PsycopgConnection
from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    Row,
    create_engine,
    event,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from vamu_tasks.domain import (
    MAX_ERROR_MESSAGE,
    TERMINAL_STATUSES,
    Delivery,
    Feature,
    JobFilter,
    JobRecord,
    JobSource,
    JobStatus,
    NewJob,
    Notification,
    Spend,
)
from vamu_tasks.errors import LeaseHeld, StoreUnavailable
from vamu_tasks.store import statements
from vamu_tasks.store.direct import DirectConnection, DirectStatement, Executes
from vamu_tasks.store.models import AiJob, NotificationOutbox

OPEN_STATUSES = ("queued", "running")
JOBS = statements.JOBS
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for PostgreSQL (psycopg 3) or SQLite, tuned for many worker threads."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the CLI read while a worker writes.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            # SQLite has no SELECT ... FOR UPDATE and pysqlite starts transactions lazily, at
            # the first write; take the write lock when the transaction begins instead.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # No pool_pre_ping: it cost a round trip per checkout. A connection that died in the pool
    # fails its first statement instead; SQLAlchemy then drops every connection as old as it,
    # and `Database.run` sends the work again on a new one (the job path), while the other
    # calls raise StoreUnavailable once and are retried by their callers.
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)


def as_utc(value: datetime | None) -> datetime | None:
    # SQLite keeps no zone; every timestamp we write is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def to_record(row: AiJob | Row[Any]) -> JobRecord:
    return JobRecord(
        id=row.id,
        feature=cast(Feature, row.feature),
        user_id=row.user_id,
        status=cast(JobStatus, row.status),
        request=row.request,
        result=row.result,
        error_kind=row.error_kind,
        error_message=row.error_message,
        attempts=row.attempts,
        source=cast(JobSource, row.source),
        source_ref=row.source_ref,
        provider=row.provider,
        model=row.model,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cost_usd=row.cost_usd,
        created_at=as_utc(row.created_at) or utcnow(),
        started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at),
        rerun_of=row.rerun_of,
        notify=row.notify if row.notify is not None else True,
        rerun_reason=row.rerun_reason,
        requested_by=row.requested_by,
        cache_read_tokens=row.cache_read_tokens,
        cache_write_tokens=row.cache_write_tokens,
        deliver_by=as_utc(row.deliver_by),
        batch_id=row.batch_id,
    )


def _new_record(values: Mapping[str, Any]) -> JobRecord:
    """The record of a row just inserted with `values` (and the columns' defaults)."""
    return JobRecord(
        id=values["id"],
        feature=values["feature"],
        user_id=values["user_id"],
        status=values["status"],
        request=values["request"],
        result=None,
        error_kind=None,
        error_message=None,
        attempts=0,
        source=values["source"],
        source_ref=values["source_ref"],
        provider=None,
        model=None,
        input_tokens=None,
        output_tokens=None,
        cost_usd=None,
        created_at=values["created_at"],
        started_at=None,
        finished_at=None,
        rerun_of=values["rerun_of"],
        notify=values["notify"],
        rerun_reason=values["rerun_reason"],
        requested_by=values["requested_by"],
        deliver_by=values["deliver_by"],
    )


def outbox_row(note: Notification, transports: Sequence[str]) -> NotificationOutbox:
    """A notification to deliver to each transport, written in its job's transaction (the
    same columns the job path's single statement writes)."""
    return NotificationOutbox(**statements.outbox_values(note, transports, utcnow()))


def add_spend(row: AiJob, spend: Spend) -> None:
    """Tokens and cost add up over every attempt; provider and model are the latest call's."""
    if spend.provider is None:
        return
    row.provider = spend.provider
    row.model = spend.model
    row.input_tokens = (row.input_tokens or 0) + spend.usage.input_tokens
    row.output_tokens = (row.output_tokens or 0) + spend.usage.output_tokens
    row.cache_read_tokens = (row.cache_read_tokens or 0) + spend.usage.cache_read_tokens
    row.cache_write_tokens = (row.cache_write_tokens or 0) + spend.usage.cache_write_tokens
    if spend.cost_usd is not None:
        row.cost_usd = (row.cost_usd or 0) + spend.cost_usd


def finish_row(
    session: Session,
    row: AiJob,
    values: Mapping[str, Any],
    spend: Spend,
    notifications: Sequence[Notification],
    transports: Sequence[str],
) -> None:
    """End a locked, open job row: its outcome, spend and outbox rows, in the caller's
    transaction (the batch tier's commit uses it too)."""
    for key, value in values.items():
        setattr(row, key, value)
    row.lease_owner = None
    row.lease_until = None
    row.retry_at = None
    add_spend(row, spend)
    row.finished_at = utcnow()
    if transports:
        for note in notifications:
            session.add(outbox_row(note, transports))


class _RowDelivery:
    """One locked outbox row being delivered; changes commit when the delivery ends."""

    def __init__(self, row: NotificationOutbox) -> None:
        self._row = row
        self.notification = Notification(
            id=row.id, event=row.event, user_id=row.user_id, job_id=row.job_id, data=row.payload
        )
        self.pending = list(row.pending_transports)

    def mark_delivered(self, transport: str) -> None:
        self.pending = [t for t in self.pending if t != transport]
        self._row.pending_transports = list(self.pending)
        if not self.pending:
            self._row.delivered_at = utcnow()

    def record_failure(self, error: str, retry_in_s: float) -> None:
        self._row.attempts += 1
        self._row.last_error = error[:MAX_ERROR_MESSAGE]
        self._row.next_attempt_at = utcnow() + timedelta(seconds=retry_in_s)


# A given-up notification's next attempt: never (a date every backend can store).
GIVEN_UP = datetime(9999, 1, 1, tzinfo=UTC)


class Database:
    """An engine and its sessions: one short transaction per call, outages as StoreUnavailable."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # On PostgreSQL a statement of `run` is its own transaction: no BEGIN and COMMIT round
        # trips (psycopg sends each apart). SQLite keeps its write-locking transaction.
        self._autocommit: Engine | None = None
        # The job path's statements compiled for psycopg (store/direct.py), by statement.
        self._direct: dict[Executable, DirectStatement] | None = None
        if engine.dialect.name == "postgresql":
            self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
            self._direct = {}

    def run(self, work: Callable[[Connection], T]) -> T:
        """`work` on one connection, committed when it returns: each statement on its own on
        PostgreSQL (so `work` must be correct statement by statement, as the job path's single
        statements are), in one transaction on SQLite.

        A pooled connection found dead (the server restarted while it sat idle) is replaced and
        `work` runs once more; a database that stays away raises StoreUnavailable.
        """
        for attempt in (1, 2):
            try:
                if self._autocommit is not None:
                    with self._autocommit.connect() as conn:
                        return work(conn)
                with self.engine.begin() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if attempt == 1 and exc.connection_invalidated:
                    continue
                unavailable = _unavailable(exc)
                if unavailable is None:
                    raise
                raise unavailable from exc
        raise AssertionError("unreachable")

    def run_direct(self, work: Callable[[Executes], T]) -> T:
        """`run` for the job path's statements: on PostgreSQL they go straight to psycopg, in
        autocommit, on a connection of the same pool (store/direct.py); elsewhere, `run`.

        A pooled connection found dead is dropped and `work` runs again on the next, until
        the pool's idle connections are used up (a restarted server leaves them all dead).
        """
        if self._direct is None:
            return self.run(work)
        pool = self.engine.pool
        attempts = 2 + (pool.checkedin() if isinstance(pool, QueuePool) else 0)
        for attempt in range(1, attempts + 1):
            try:
                # The pool's own connect: psycopg's errors come unwrapped.
                pooled = self.engine.raw_connection()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                raise StoreUnavailable(
                    f"Database unreachable ({type(exc).__name__}); will retry."
                ) from exc
            driver = cast("PsycopgConnection[Any]", pooled.driver_connection)
            try:
                driver.autocommit = True
                return work(DirectConnection(driver, self.engine.dialect, self._direct))
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                dead = driver.broken or driver.closed
                if dead:
                    pooled.invalidate(exc)
                if not (dead and attempt < attempts):
                    raise StoreUnavailable(
                        f"Database unreachable ({type(exc).__name__}); will retry."
                    ) from exc
            finally:
                # Back to the pool as SQLAlchemy's other users expect it: not in autocommit.
                if not (driver.broken or driver.closed):
                    driver.autocommit = False
                pooled.close()
        raise AssertionError("unreachable")

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10) -> Database:
        return cls(make_engine(url, pool_size=pool_size))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        try:
            with self._sessions() as session, session.begin():
                yield session
        except DBAPIError as exc:
            unavailable = _unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc


def _unavailable(exc: DBAPIError) -> StoreUnavailable | None:
    """A lost or refused connection as StoreUnavailable (worth retrying); None for a data or
    programming error, which would fail the same way again."""
    lost = isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated
    if not lost:
        return None
    return StoreUnavailable(f"Database unreachable ({type(exc.orig).__name__}); will retry.")


class SqlAlchemyJobStore:
    """The job rows and the notification outbox."""

    def __init__(self, db: Database, *, transports: Sequence[str] = ("log",)) -> None:
        self.db = db
        self._session = db.transaction
        self._transports = list(transports)

    @classmethod
    def from_url(
        cls, url: str, *, transports: Sequence[str] = ("log",), pool_size: int = 10
    ) -> SqlAlchemyJobStore:
        return cls(Database.from_url(url, pool_size=pool_size), transports=transports)

    def close(self) -> None:
        self.db.close()

    # --- jobs -----------------------------------------------------------------------------

    def create_job(self, job: NewJob) -> tuple[JobRecord, bool]:
        values: dict[str, Any] = {
            "id": job.id,
            "feature": job.feature,
            "user_id": job.user_id,
            "status": "batched" if job.deliver_by else "queued",
            "request": dict(job.request),
            "deliver_by": job.deliver_by,
            "source": job.source,
            "source_ref": job.source_ref,
            "attempts": 0,
            "rerun_of": job.rerun_of,
            "notify": job.notify,
            "rerun_reason": job.rerun_reason,
            "requested_by": job.requested_by,
            "created_at": utcnow(),
        }
        # One INSERT … ON CONFLICT DO NOTHING: a redelivered BullMQ job reads back the first.
        if self.db.run_direct(lambda conn: statements.insert_job(conn, values)):
            return _new_record(values), True
        if job.source_ref is None:
            raise LookupError(f"job {job.id} was not inserted and has no source_ref")
        existing = self.find_job(job.source, job.source_ref)
        if existing is None:
            raise LookupError(f"No ai_jobs row for {job.source} {job.source_ref}")
        return existing, False

    def get_job(self, job_id: uuid.UUID) -> JobRecord | None:
        row = self.db.run(lambda conn: conn.execute(statements.GET_JOB, {"job_id": job_id}).first())
        return to_record(row) if row else None

    def find_job(self, source: str, source_ref: str) -> JobRecord | None:
        params = {"source": source, "source_ref": source_ref}
        row = self.db.run(lambda conn: conn.execute(statements.FIND_JOB, params).first())
        return to_record(row) if row else None

    def start_attempt(
        self, job_id: uuid.UUID, owner: str | None = None, lease_s: float = 0.0
    ) -> JobRecord:
        # One UPDATE … RETURNING; only when it changes nothing is the row read, to say why.
        # The state may move in between (a lease running out): then the update is tried again.
        for _ in range(3):
            now = utcnow()
            row = self.db.run_direct(
                partial(
                    statements.start_attempt, job_id=job_id, now=now, owner=owner, lease_s=lease_s
                )
            )
            if row is not None:
                return to_record(row)
            current = self.db.run(
                lambda conn: conn.execute(statements.GET_JOB, {"job_id": job_id}).first()
            )
            if current is None:
                raise LookupError(f"No ai_jobs row {job_id}")
            if current.status in TERMINAL_STATUSES:
                return to_record(current)
            until = as_utc(current.lease_until)
            if current.lease_owner not in (None, owner) and until and until > now:
                raise LeaseHeld(f"job {job_id} is running on {current.lease_owner}")
        raise LeaseHeld(f"job {job_id} changed hands while this attempt started; not run here")

    def renew_leases(self, held: Sequence[tuple[uuid.UUID, str]], lease_s: float) -> None:
        """Keep the (job, owner) leases this process holds from being taken for orphans."""
        if not held:
            return
        with self._session() as session:
            session.execute(
                update(AiJob)
                .where(
                    tuple_(AiJob.id, AiJob.lease_owner).in_(list(held)),
                    AiJob.status == "running",
                )
                .values(lease_until=utcnow() + timedelta(seconds=lease_s))
            )

    def reap(
        self, grace_s: float, limit: int = 200, stale_queued_s: float | None = None
    ) -> list[tuple[uuid.UUID, str]]:
        """Jobs whose runner died (lease ran out) or whose retry is overdue; claimed for
        `grace_s` so the next sweep does not hand them out twice."""
        now = utcnow()
        claim = now + timedelta(seconds=grace_s)

        def claims(conn: Connection) -> list[tuple[uuid.UUID, str]]:
            found = list(
                conn.execute(
                    statements.CLAIM_ORPHANS, {"now": now, "claim": claim, "limit": limit}
                ).all()
            )
            found += conn.execute(
                statements.CLAIM_OVERDUE,
                {"now": now - timedelta(seconds=grace_s), "claim": claim, "limit": limit},
            ).all()
            if stale_queued_s is not None:
                # Queued and never started for that long: the message may be lost (a broker or
                # worker that died between taking it and recording it). Re-sent at most once
                # per period; a copy of a job that does run finds it running and does nothing.
                found += conn.execute(
                    statements.CLAIM_NEVER_STARTED,
                    {
                        "now": now - timedelta(seconds=stale_queued_s),
                        "claim": now + timedelta(seconds=stale_queued_s),
                        "limit": limit,
                    },
                ).all()
            return [(row.id, row.feature) for row in found]

        return self.db.run(claims)

    def unstarted_jobs(self, older_than_s: float, limit: int = 500) -> list[tuple[uuid.UUID, str]]:
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self._session() as session:
            rows = session.execute(
                select(AiJob.id, AiJob.feature)
                .where(*statements.NEVER_STARTED, AiJob.created_at < cutoff)
                .order_by(AiJob.created_at)
                .limit(limit)
            ).all()
        return [(row.id, row.feature) for row in rows]

    def claim_unstarted(
        self, job_ids: Sequence[uuid.UUID], hold_s: float
    ) -> list[tuple[uuid.UUID, str]]:
        if not job_ids:
            return []
        params = {
            "ids": list(job_ids),
            "claim": utcnow() + timedelta(seconds=hold_s),
            "limit": len(job_ids),
        }
        rows = self.db.run(
            lambda conn: conn.execute(statements.CLAIM_NEVER_STARTED_IDS, params).all()
        )
        return [(row.id, row.feature) for row in rows]

    def requeue(
        self,
        job_id: uuid.UUID,
        error_kind: str,
        error_message: str,
        spend: Spend | None = None,
        retry_in_s: float | None = None,
    ) -> None:
        with self._session() as session:
            row = session.get(AiJob, job_id, with_for_update=True)
            if row is None or row.status not in OPEN_STATUSES:
                return
            row.status = "queued"
            row.lease_owner = None
            row.lease_until = None
            if retry_in_s is not None:
                row.retry_at = utcnow() + timedelta(seconds=retry_in_s)
            row.error_kind = error_kind
            row.error_message = error_message[:MAX_ERROR_MESSAGE]
            if spend is not None:
                add_spend(row, spend)

    def succeed(
        self,
        job_id: uuid.UUID,
        result: Mapping[str, Any],
        spend: Spend,
        notifications: Sequence[Notification],
    ) -> JobRecord:
        return self._finish(
            job_id,
            {
                "status": "succeeded",
                "result": dict(result),
                "error_kind": None,
                "error_message": None,
            },
            spend,
            notifications,
        )

    def fail(
        self,
        job_id: uuid.UUID,
        error_kind: str,
        error_message: str,
        spend: Spend,
        notifications: Sequence[Notification],
    ) -> JobRecord:
        return self._finish(
            job_id,
            {
                "status": "failed",
                "error_kind": error_kind,
                "error_message": error_message[:MAX_ERROR_MESSAGE],
            },
            spend,
            notifications,
        )

    def cancel(
        self, job_id: uuid.UUID, reason: str, notifications: Sequence[Notification]
    ) -> JobRecord:
        return self._finish(
            job_id,
            {
                "status": "cancelled",
                "error_kind": "cancelled",
                "error_message": reason[:MAX_ERROR_MESSAGE],
            },
            Spend(),
            notifications,
        )

    def list_jobs(self, filters: JobFilter) -> list[JobRecord]:
        query = select(AiJob)
        if filters.ids:
            query = query.where(AiJob.id.in_(filters.ids))
        if filters.status:
            query = query.where(AiJob.status == filters.status)
        if filters.feature:
            query = query.where(AiJob.feature == filters.feature)
        if filters.error_kind:
            query = query.where(AiJob.error_kind == filters.error_kind)
        if filters.since:
            query = query.where(AiJob.created_at >= filters.since)
        if filters.until:
            query = query.where(AiJob.created_at < filters.until)
        query = query.order_by(AiJob.created_at.desc()).limit(filters.limit)
        with self._session() as session:
            return [to_record(row) for row in session.scalars(query)]

    def _finish(
        self,
        job_id: uuid.UUID,
        values: dict[str, Any],
        spend: Spend,
        notifications: Sequence[Notification],
    ) -> JobRecord:
        # The outcome and its outbox rows in one statement, only if the job is still open.
        now = utcnow()
        row = self.db.run_direct(
            lambda conn: statements.finish(
                conn, job_id, values, spend, notifications, self._transports, now
            )
        )
        if row is not None:
            return to_record(row)
        job = self.get_job(job_id)
        if job is None:
            raise LookupError(f"No ai_jobs row {job_id}")
        return job

    # --- outbox ---------------------------------------------------------------------------

    def pending_notifications(self, job_id: uuid.UUID) -> list[uuid.UUID]:
        with self._session() as session:
            ids = session.scalars(
                select(NotificationOutbox.id).where(
                    NotificationOutbox.job_id == job_id, NotificationOutbox.delivered_at.is_(None)
                )
            )
            return list(ids)

    def get_notification(self, event_id: uuid.UUID) -> tuple[Notification, list[str]] | None:
        """The notification and the transports that have not had it yet."""
        with self._session() as session:
            row = session.get(NotificationOutbox, event_id)
            if row is None:
                return None
            note = Notification(
                id=row.id,
                event=row.event,
                user_id=row.user_id,
                job_id=row.job_id,
                data=row.payload,
            )
            return note, list(row.pending_transports)

    @contextmanager
    def delivering(self, event_id: uuid.UUID) -> Iterator[Delivery | None]:
        """Hold the notification while it is sent, so two deliverers never send it at once.

        None when it does not exist, was delivered, or another deliverer holds it now.
        """
        with self._session() as session:
            row = session.scalars(
                select(NotificationOutbox)
                .where(NotificationOutbox.id == event_id)
                .with_for_update(skip_locked=True)
            ).one_or_none()
            if row is None or row.delivered_at is not None:
                yield None
                return
            yield _RowDelivery(row)

    def mark_delivered(self, event_id: uuid.UUID, transport: str) -> None:
        with self._session() as session:
            row = session.get(NotificationOutbox, event_id, with_for_update=True)
            if row is None:
                return
            row.pending_transports = [t for t in row.pending_transports if t != transport]
            if not row.pending_transports:
                row.delivered_at = utcnow()

    @property
    def transports(self) -> list[str]:
        """The transports every outbox row written by this store is pending for."""
        return list(self._transports)

    def mark_sent(self, event_ids: Sequence[uuid.UUID], transports: Sequence[str]) -> None:
        """Record that `transports` have had these notifications, without locking them: for
        the worker that has just committed them and sent them itself."""
        now = utcnow()
        self.db.run_direct(lambda conn: statements.mark_sent(conn, event_ids, transports, now))

    def record_delivery_failure(self, event_id: uuid.UUID, error: str, retry_in_s: float) -> None:
        with self._session() as session:
            row = session.get(NotificationOutbox, event_id, with_for_update=True)
            if row is None:
                return
            row.attempts += 1
            row.last_error = error[:MAX_ERROR_MESSAGE]
            row.next_attempt_at = utcnow() + timedelta(seconds=retry_in_s)

    def give_up_notifications(self, older_than_s: float) -> int:
        """Stop sending notifications still undelivered `older_than_s` after they were written
        (a receiver gone for good would otherwise be retried for ever); how many were given up.

        The rows stay, with the reason in `last_error`, for an operator to look at.
        """
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self._session() as session:
            rows = list(
                session.scalars(
                    select(NotificationOutbox)
                    .where(
                        NotificationOutbox.delivered_at.is_(None),
                        NotificationOutbox.created_at < cutoff,
                        NotificationOutbox.next_attempt_at < GIVEN_UP,
                    )
                    .with_for_update(skip_locked=True)
                )
            )
            reason = f"given up: undelivered after {older_than_s:g}s"
            for row in rows:
                row.next_attempt_at = GIVEN_UP
                row.last_error = f"{reason}; {row.last_error}" if row.last_error else reason
            return len(rows)

    def reopen_notifications(
        self, job_ids: Sequence[uuid.UUID] = (), *, given_up_only: bool = False, limit: int = 1000
    ) -> list[uuid.UUID]:
        """Undelivered notifications (of these jobs, or every given-up one), due again now; an
        operator's resend. One that fails again is given up again at the next sweep."""
        with self._session() as session:
            query = select(NotificationOutbox).where(NotificationOutbox.delivered_at.is_(None))
            if job_ids:
                query = query.where(NotificationOutbox.job_id.in_(job_ids))
            if given_up_only:
                query = query.where(NotificationOutbox.next_attempt_at >= GIVEN_UP)
            rows = list(
                session.scalars(
                    query.order_by(NotificationOutbox.created_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            for row in rows:
                row.next_attempt_at = utcnow()
            return [row.id for row in rows]

    def claim_stale_notifications(self, older_than_s: float, limit: int = 100) -> list[uuid.UUID]:
        """Undelivered notifications nobody has tried for a while; claimed for `older_than_s`."""
        now = utcnow()
        cutoff = now - timedelta(seconds=older_than_s)
        with self._session() as session:
            query = (
                select(NotificationOutbox)
                .where(
                    NotificationOutbox.delivered_at.is_(None),
                    NotificationOutbox.next_attempt_at <= cutoff,
                )
                .order_by(NotificationOutbox.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = list(session.scalars(query))
            for row in rows:
                row.next_attempt_at = now
            return [row.id for row in rows]
