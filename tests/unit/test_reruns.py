"""A rerun is a new row with its own requestId, `rerun-<original job id>-<n>`, and its events
name the job it reruns."""

from __future__ import annotations

import uuid
from typing import Any

from vamu_tasks.domain import NewJob, Spend
from vamu_tasks.features import FeatureSpec
from vamu_tasks.jobs import failed_notification, ready_notification
from vamu_tasks.reruns import RerunOptions, rerun_job
from vamu_tasks.testing.memory import InMemoryJobStore

OPTIONS = RerunOptions(reason="provider outage", requested_by="ops@host")


class Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[uuid.UUID, Any]] = []

    def send(self, spec: FeatureSpec, job_id: uuid.UUID, headers: Any = None, **opts: Any) -> str:
        self.sent.append((job_id, headers))
        return "task"


def failed_original(store: InMemoryJobStore, request_id: str | None = "req-42") -> Any:
    request: dict[str, Any] = {"userId": "u-ada", "count": 2}
    source_ref = None
    if request_id is not None:
        request["requestId"] = request_id
        source_ref = f"request:{request_id}"
    job, _ = store.create_job(
        NewJob("inspiration", "u-ada", request, "bullmq", source_ref=source_ref)
    )
    store.start_attempt(job.id)
    return store.fail(job.id, "rate_limited", "429", Spend(), [])


def test_each_rerun_of_a_job_gets_the_next_request_id_and_the_original_keeps_its_own() -> None:
    store = InMemoryJobStore()
    original = failed_original(store)

    first = rerun_job(store, Sender(), original, OPTIONS)
    second = rerun_job(store, Sender(), original, OPTIONS)

    assert first.request == {"userId": "u-ada", "count": 2,
                             "requestId": f"rerun-{original.id}-1"}
    assert second.request["requestId"] == f"rerun-{original.id}-2"
    assert (first.source, first.source_ref) == ("cli", f"request:rerun-{original.id}-1")
    assert first.rerun_of == second.rerun_of == original.id
    assert store.get_job(original.id) == original


def test_a_rerun_of_a_job_without_a_request_id_gets_one() -> None:
    store = InMemoryJobStore()
    original = failed_original(store, request_id=None)

    rerun = rerun_job(store, Sender(), original, OPTIONS)

    assert rerun.request["requestId"] == f"rerun-{original.id}-1"


def test_a_number_another_rerun_took_first_is_skipped() -> None:
    store = InMemoryJobStore()
    original = failed_original(store)
    # A concurrent `vamu-tasks rerun` inserted number 1 between this one's reads.
    store.create_job(NewJob("inspiration", "u-ada", {"userId": "u-ada"}, "cli",
                            source_ref=f"request:rerun-{original.id}-1", rerun_of=original.id))
    sender = Sender()

    rerun = rerun_job(store, sender, original, OPTIONS)

    assert rerun.request["requestId"] == f"rerun-{original.id}-2"
    # Only this rerun's task is sent, with its requestId for the log lines.
    assert sender.sent == [(rerun.id, {"requestId": f"rerun-{original.id}-2"})]


def test_a_reruns_events_carry_its_request_id_and_the_job_it_reruns() -> None:
    store = InMemoryJobStore()
    original = failed_original(store)
    rerun = rerun_job(store, Sender(), original, OPTIONS)

    for note in [ready_notification(rerun, "inspiration-ready"),
                 failed_notification(rerun, "timeout")]:
        assert note.data["jobId"] == str(rerun.id)
        assert note.data["requestId"] == f"rerun-{original.id}-1"
        assert note.data["rerunOf"] == str(original.id)
