"""Delivering an outbox notification once to each transport that has not had it yet."""

from __future__ import annotations

import uuid

import pytest

from vamu_tasks.domain import NewJob, Notification, Spend
from vamu_tasks.jobs import ready_notification
from vamu_tasks.notify.service import deliver
from vamu_tasks.testing.memory import InMemoryJobStore, RecordingTransport

TRANSPORTS = ("socketio", "webhook")


@pytest.fixture
def store() -> InMemoryJobStore:
    return InMemoryJobStore(transports=TRANSPORTS)


@pytest.fixture
def socketio() -> RecordingTransport:
    return RecordingTransport("socketio")


@pytest.fixture
def webhook() -> RecordingTransport:
    return RecordingTransport("webhook")


@pytest.fixture
def note(store: InMemoryJobStore) -> Notification:
    job, _ = store.create_job(NewJob("inspiration", "u-ada", {"userId": "u-ada"}, "cli"))
    store.start_attempt(job.id)
    notification = ready_notification(job, "inspiration-ready")
    store.succeed(job.id, {"ideas": []}, Spend(), [notification])
    return notification


def test_each_pending_transport_gets_the_notification_once(
    store: InMemoryJobStore,
    socketio: RecordingTransport,
    webhook: RecordingTransport,
    note: Notification,
) -> None:
    report = deliver(store, {"socketio": socketio, "webhook": webhook}, note.id)

    assert report.complete
    assert list(report.delivered) == ["socketio", "webhook"]
    assert socketio.sent == [note]
    assert webhook.sent == [note]
    assert store.pending_notifications(note.job_id) == []


def test_a_failing_transport_stays_pending_with_its_failure_recorded(
    store: InMemoryJobStore,
    socketio: RecordingTransport,
    webhook: RecordingTransport,
    note: Notification,
) -> None:
    webhook.fail_next()

    report = deliver(store, {"socketio": socketio, "webhook": webhook}, note.id)

    assert not report.complete
    assert list(report.delivered) == ["socketio"]
    assert "webhook is down" in report.failed["webhook"]
    assert store.get_notification(note.id) == (note, ["webhook"])
    assert store.pending_notifications(note.job_id) == [note.id]
    row = store.outbox[note.id]
    assert row.attempts == 1
    assert row.last_error is not None and row.last_error.startswith("webhook:")


def test_a_second_delivery_sends_only_to_the_transports_still_pending(
    store: InMemoryJobStore,
    socketio: RecordingTransport,
    webhook: RecordingTransport,
    note: Notification,
) -> None:
    transports = {"socketio": socketio, "webhook": webhook}
    webhook.fail_next()
    deliver(store, transports, note.id)

    report = deliver(store, transports, note.id)

    assert list(report.delivered) == ["webhook"]
    assert report.complete
    assert socketio.sent == [note]
    assert webhook.sent == [note]
    assert store.pending_notifications(note.job_id) == []


def test_a_fully_delivered_notification_is_not_sent_again(
    store: InMemoryJobStore,
    socketio: RecordingTransport,
    webhook: RecordingTransport,
    note: Notification,
) -> None:
    transports = {"socketio": socketio, "webhook": webhook}
    deliver(store, transports, note.id)

    report = deliver(store, transports, note.id)

    assert (list(report.delivered), dict(report.failed)) == ([], {})
    assert len(socketio.sent) == len(webhook.sent) == 1


def test_a_transport_not_configured_in_this_process_stays_pending(
    store: InMemoryJobStore, socketio: RecordingTransport, note: Notification
) -> None:
    report = deliver(store, {"socketio": socketio}, note.id)

    assert list(report.delivered) == ["socketio"]
    assert "not configured" in report.failed["webhook"]
    assert store.get_notification(note.id) == (note, ["webhook"])


def test_an_unknown_event_id_gives_an_empty_report_and_sends_nothing(
    store: InMemoryJobStore, socketio: RecordingTransport, webhook: RecordingTransport
) -> None:
    report = deliver(store, {"socketio": socketio, "webhook": webhook}, uuid.uuid4())

    assert (list(report.delivered), dict(report.failed)) == ([], {})
    assert socketio.sent == webhook.sent == []


def test_delivering_to_some_transports_leaves_the_others_pending_without_a_failure(
    store: InMemoryJobStore,
    socketio: RecordingTransport,
    webhook: RecordingTransport,
    note: Notification,
) -> None:
    transports = {"socketio": socketio, "webhook": webhook}

    inline = deliver(store, transports, note.id, only={"socketio", "log"})
    later = deliver(store, transports, note.id)

    assert (list(inline.delivered), list(inline.left)) == (["socketio"], ["webhook"])
    assert inline.failed == {}
    assert not inline.complete  # so the worker hands it to the notify queue
    assert store.outbox[note.id].attempts == 0
    assert (list(later.delivered), later.complete) == (["webhook"], True)
    assert socketio.sent == [note] and webhook.sent == [note]
