"""Spans around the ports a job goes through: the NestJS API, the job commit, each notification.

Wrappers, added by the composition root only while traces are on; each span is the current one
while its call runs, so what the call sends on (the NestJS request's `traceparent`, a Celery
task) belongs to it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from vamu_tasks.domain import JobRecord, Notification, Spend, UserContext
from vamu_tasks.errors import VamuError
from vamu_tasks.ports import EventsClient, Transport, UserContextClient
from vamu_tasks.store.repository import Database, SqlAlchemyJobStore


@contextmanager
def span(
    tracer: Tracer, name: str, kind: SpanKind, attributes: Mapping[str, Any]
) -> Iterator[Span]:
    """A current span that records a failure as `error.type` (the error kind, or the
    exception's type) without its message, which may quote user data."""
    with tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except Exception as exc:
            kind_name = exc.error_kind if isinstance(exc, VamuError) else type(exc).__qualname__
            current.set_attribute("error.type", kind_name)
            current.set_status(Status(StatusCode.ERROR, kind_name))
            raise


class NestApi(UserContextClient, EventsClient, Protocol):
    def close(self) -> None: ...


class TracedApiClient:
    """One CLIENT span per NestJS internal API call, named `GET <route>`."""

    def __init__(self, inner: NestApi, tracer: Tracer, base_url: str) -> None:
        self._inner = inner
        self._tracer = tracer
        url = urlsplit(base_url)
        self._server = {"server.address": url.hostname or ""}
        if url.port:
            self._server["server.port"] = url.port  # type: ignore[assignment]

    def _get(self, route: str) -> Any:
        attributes = {"http.request.method": "GET", "url.template": route, **self._server}
        return span(self._tracer, f"GET {route}", SpanKind.CLIENT, attributes)

    def get_context(self, user_id: str) -> UserContext:
        with self._get("/internal/users/{userId}/context"):
            return self._inner.get_context(user_id)

    def search_events(self, **params: Any) -> list[dict[str, Any]]:
        with self._get("/internal/events/search"):
            return self._inner.search_events(**params)

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        with self._get("/internal/events/{eventId}"):
            return self._inner.get_event(event_id)

    def close(self) -> None:
        self._inner.close()


# Socket.IO is a PUBLISH to Redis (a message for the app); a webhook is an HTTP call.
_TRANSPORT_KINDS = {"socketio": SpanKind.PRODUCER, "webhook": SpanKind.CLIENT}


class TracedTransport:
    """One span per notification sent, `notify <transport>`, with the event and its ids."""

    def __init__(self, inner: Transport, tracer: Tracer) -> None:
        self._inner = inner
        self._tracer = tracer
        self.name = inner.name

    def send(self, notification: Notification) -> None:
        attributes = {
            "vamu.notify.transport": self.name,
            "vamu.notification.event": notification.event,
            "vamu.notification.id": str(notification.id),
            "vamu.job.id": str(notification.job_id),
        }
        kind = _TRANSPORT_KINDS.get(self.name, SpanKind.INTERNAL)
        with span(self._tracer, f"notify {self.name}", kind, attributes):
            self._inner.send(notification)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if callable(close):
            close()


class TracedJobStore(SqlAlchemyJobStore):
    """The job store with a span, `commit ai_jobs`, around the transaction that ends a job (its
    row and its outbox rows together)."""

    def __init__(
        self, db: Database, *, transports: Sequence[str] = ("log",), tracer: Tracer
    ) -> None:
        super().__init__(db, transports=transports)
        self._tracer = tracer
        self._system = db.engine.dialect.name

    @contextmanager
    def _commit(
        self, job_id: uuid.UUID, status: str, notifications: Sequence[Notification]
    ) -> Iterator[None]:
        attributes = {
            "db.system.name": self._system,
            "db.collection.name": "ai_jobs",
            "vamu.job.id": str(job_id),
            "vamu.job.status": status,
            "vamu.notifications": len(notifications),
        }
        with span(self._tracer, "commit ai_jobs", SpanKind.CLIENT, attributes):
            yield

    def succeed(
        self,
        job_id: uuid.UUID,
        result: Mapping[str, Any],
        spend: Spend,
        notifications: Sequence[Notification],
    ) -> JobRecord:
        with self._commit(job_id, "succeeded", notifications):
            return super().succeed(job_id, result, spend, notifications)

    def fail(
        self,
        job_id: uuid.UUID,
        error_kind: str,
        error_message: str,
        spend: Spend,
        notifications: Sequence[Notification],
    ) -> JobRecord:
        with self._commit(job_id, "failed", notifications):
            return super().fail(job_id, error_kind, error_message, spend, notifications)

    def cancel(
        self, job_id: uuid.UUID, reason: str, notifications: Sequence[Notification]
    ) -> JobRecord:
        with self._commit(job_id, "cancelled", notifications):
            return super().cancel(job_id, reason, notifications)
