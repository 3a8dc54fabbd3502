"""Operators' reruns, job listings and cancellation, through `vamu-tasks` and a real worker."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from tests.conftest import Stack
from tests.support.cli import vamu
from tests.support.worker import wait_for_job
from vamu_tasks.domain import JobFilter, NewJob, Spend
from vamu_tasks.jobs import ready_notification
from vamu_tasks.notify.chunks import replay_chunks
from vamu_tasks.store.models import NotificationOutbox
from vamu_tasks.store.repository import GIVEN_UP
from vamu_tasks.submit import validate_request
from vamu_tasks.testing.answers import ideas_responder
from vamu_tasks.testing.fake_llm import Text, ToolCall

pytestmark = pytest.mark.integration


@pytest.fixture
def s(stack: Stack, fake_llm, fake_api) -> Stack:
    fake_llm.set_responder(ideas_responder)
    stack.webhook.fail_with = None
    return stack


def failed_job(s: Stack, user: str) -> uuid.UUID:
    """A job that failed as user_not_found because the user did not exist yet."""
    job = wait_for_job(s.store, s.submit({"userId": user, "count": 1}))
    assert job.error_kind == "user_not_found"
    return job.id


def add_user(s: Stack, user: str) -> None:
    from vamu_tasks.context.samples import SAMPLE_USERS

    s.api.users[user] = {**SAMPLE_USERS["u-ada"], "userId": user}


def reruns_of(s: Stack, job_id: uuid.UUID):
    return [j for j in s.store.list_jobs(JobFilter(limit=1000)) if j.rerun_of == job_id]


def test_a_rerun_by_id_is_a_new_linked_job_and_the_original_stays_untouched(s: Stack):
    user = f"u-late-{uuid.uuid4().hex[:6]}"
    original_id = failed_job(s, user)
    before = s.store.get_job(original_id)
    add_user(s, user)

    # user_not_found fails the same way unless something changed: the rerun asks for both
    # --include-permanent and a confirmation, even for one job.
    plain = vamu(s.env, "rerun", str(original_id), "--yes")
    assert "0 job(s) to rerun, 1 skipped" in plain.stdout
    assert "failed as user_not_found, which a rerun meets again; --include-permanent" in \
        plain.stdout
    declined = vamu(s.env, "rerun", str(original_id), "--include-permanent", input="n\n")
    assert declined.returncode == 1 and "Rerun 1 job(s)?" in declined.stdout
    assert reruns_of(s, original_id) == []

    result = vamu(s.env, "rerun", str(original_id), "--include-permanent",
                  "--reason", "user created late", input="y\n")

    assert result.returncode == 0, result.stderr
    assert "1 job(s) to rerun, 0 skipped" in result.stdout
    assert "requeued 1, skipped 0" in result.stdout
    (rerun,) = reruns_of(s, original_id)
    done = wait_for_job(s.store, rerun.id)
    assert done.status == "succeeded"
    assert (done.rerun_reason, done.source, done.notify) == ("user created late", "cli", True)
    assert done.requested_by and "@" in done.requested_by
    assert s.store.get_job(original_id) == before
    # Its own requestId, and events that name it and the job it reruns.
    assert done.request["requestId"] == f"rerun-{original_id}-1"
    ready = s.webhook.wait_for(lambda d: d["data"].get("jobId") == str(rerun.id))
    assert ready["event"] == "inspiration-ready"
    assert ready["data"]["requestId"] == f"rerun-{original_id}-1"
    assert ready["data"]["rerunOf"] == str(original_id)

    again = vamu(s.env, "rerun", str(original_id), "--yes", "--no-notify", "--include-permanent")

    assert again.returncode == 0, again.stderr
    numbers = sorted(j.request["requestId"] for j in reruns_of(s, original_id))
    assert numbers == [f"rerun-{original_id}-1", f"rerun-{original_id}-2"]


def test_a_dry_run_counts_by_feature_and_kind_names_users_and_estimates_tokens(s: Stack):
    users = [f"u-dry-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    ids = [failed_job(s, user) for user in users]

    result = vamu(s.env, "rerun", "--status", "failed", "--error-kind", "user_not_found",
                  "--since", "10m", "--dry-run", "--include-permanent")

    assert result.returncode == 0, result.stderr
    assert "user_not_found" in result.stdout and "inspiration" in result.stdout
    assert all(user in result.stdout for user in users)
    assert "estimated from the original runs: 0 input + 0 output tokens, $0.0000" in \
        result.stdout
    assert all(reruns_of(s, job_id) == [] for job_id in ids)


def test_a_bulk_rerun_asks_first_then_requeues_and_reports_counts(s: Stack):
    users = [f"u-bulk-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    ids = [failed_job(s, user) for user in users]
    for user in users:
        add_user(s, user)
    filters = ["--status", "failed", "--error-kind", "user_not_found", "--since", "1m",
               "--include-permanent"]

    declined = vamu(s.env, "rerun", *filters, input="n\n")
    assert declined.returncode == 1 and "Aborted" in declined.stderr
    assert all(reruns_of(s, job_id) == [] for job_id in ids)

    accepted = vamu(s.env, "rerun", *filters, "--yes", "--no-notify")

    assert accepted.returncode == 0, accepted.stderr
    assert "users will not be notified (--no-notify)" in accepted.stdout
    reruns = [r for job_id in ids for r in reruns_of(s, job_id)]
    assert len(reruns) == 3
    for rerun in reruns:
        assert wait_for_job(s.store, rerun.id).status == "succeeded"
        assert rerun.notify is False
    time.sleep(1.0)
    delivered = {d["data"]["jobId"] for d in s.webhook.deliveries}
    assert not delivered & {str(r.id) for r in reruns}


def test_jobs_that_succeeded_or_still_run_are_skipped_unless_forced(s: Stack):
    done = wait_for_job(s.store, s.submit({"userId": "u-ada", "count": 1}))

    skipped = vamu(s.env, "rerun", str(done.id), "--yes")
    assert "skip " + str(done.id) + " (already succeeded" in skipped.stdout
    assert reruns_of(s, done.id) == []

    forced = vamu(s.env, "rerun", str(done.id), "--yes", "--force")
    assert "requeued 1" in forced.stdout
    assert len(reruns_of(s, done.id)) == 1


def test_a_rerun_can_switch_provider_and_model(s: Stack):
    user = f"u-switch-{uuid.uuid4().hex[:6]}"
    original_id = failed_job(s, user)
    add_user(s, user)

    result = vamu(s.env, "rerun", str(original_id), "--provider", "anthropic", "--model",
                  "claude-haiku-4-5", "--include-permanent", "--yes")

    assert result.returncode == 0, result.stderr
    (rerun,) = reruns_of(s, original_id)
    done = wait_for_job(s.store, rerun.id)
    assert (done.status, done.provider, done.model) == ("succeeded", "anthropic",
                                                        "claude-haiku-4-5")
    assert s.llm.requests[-1].body["model"] == "claude-haiku-4-5"


def test_jobs_list_filters_and_prints_a_table(s: Stack):
    user = f"u-list-{uuid.uuid4().hex[:6]}"
    job_id = failed_job(s, user)

    result = vamu(s.env, "jobs", "list", "--status", "failed", "--feature", "inspiration",
                  "--error-kind", "user_not_found", "--since", "5m", "--limit", "500")

    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:4] == ["id", "feature", "status", "error"]
    line = next(r for r in rows if r.startswith(str(job_id)))
    assert "failed" in line and "user_not_found" in line and user[:16] in line
    assert all("succeeded" not in r for r in rows[:-1])


def test_cancelling_a_queued_job_ends_it_and_its_task_never_runs(s: Stack):
    data = validate_request("inspiration", {"userId": "u-ada"})
    job, _ = s.store.create_job(NewJob("inspiration", "u-ada", data, "api"))

    result = vamu(s.env, "cancel", str(job.id))
    assert result.returncode == 0, result.stderr
    from vamu_tasks.features import FEATURES

    s.sender.send(FEATURES["inspiration"], job.id)
    time.sleep(1.0)

    ended = s.store.get_job(job.id)
    assert (ended.status, ended.error_kind) == ("cancelled", "cancelled")
    assert s.llm.requests == []
    note = s.webhook.wait_for(lambda d: d["data"].get("jobId") == str(job.id))
    assert note["event"] == "ai-job-failed" and note["data"]["errorKind"] == "cancelled"


def test_cancelling_a_running_agent_stops_it_at_its_next_step(s: Stack):
    s.llm.latency = 1.0
    s.llm.set_responder(lambda request: ToolCall("search_events", {"q": "jazz"}))
    data = validate_request("agent", {"userId": "u-ada", "goal": "search forever"})
    job, _ = s.store.create_job(NewJob("agent", "u-ada", data, "cli"))
    from vamu_tasks.features import FEATURES

    s.sender.send(FEATURES["agent"], job.id)
    deadline = time.monotonic() + 10
    while len(s.llm.requests) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    result = vamu(s.env, "cancel", str(job.id), "--reason", "user gave up")
    calls_at_cancel = len(s.llm.requests)
    time.sleep(2.0)

    assert result.returncode == 0, result.stderr
    ended = s.store.get_job(job.id)
    assert (ended.status, ended.error_message) == ("cancelled", "user gave up")
    assert len(s.llm.requests) <= calls_at_cancel + 1
    events = {d["event"] for d in s.webhook.deliveries if d["data"].get("jobId") == str(job.id)}
    assert {"ai-job-failed", "agent-finished"} <= events
    finished = next(d for d in s.webhook.deliveries if d["event"] == "agent-finished"
                    and d["data"]["jobId"] == str(job.id))
    assert finished["data"]["status"] == "cancelled"


def test_cancelling_a_job_that_already_ended_says_so(s: Stack):
    done = wait_for_job(s.store, s.submit({"userId": "u-ada", "count": 1}))

    result = vamu(s.env, "cancel", str(done.id))

    assert result.returncode == 1
    assert f"Job {done.id} already succeeded; nothing to cancel." in result.stderr
    assert s.store.get_job(done.id).status == "succeeded"


def test_a_chat_reply_cancelled_mid_stream_stores_no_reply(s: Stack):
    s.llm.set_responder(None)
    s.llm.latency = 0.0
    s.llm.push(Text("word " * 400, chunk_size=10, chunk_delay=0.05))
    data = validate_request("chatbot", {"userId": "u-ada", "conversationId":
                                        f"c-{uuid.uuid4().hex[:8]}", "message": "long one"})
    job, _ = s.store.create_job(NewJob("chatbot", "u-ada", data, "cli"))
    from vamu_tasks.features import FEATURES

    s.sender.send(FEATURES["chatbot"], job.id)
    deadline = time.monotonic() + 10
    while s.store.get_job(job.id).status != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    vamu(s.env, "cancel", str(job.id))
    time.sleep(1.5)

    ended = s.store.get_job(job.id)
    assert ended.status == "cancelled" and ended.result is None
    client = redis.Redis.from_url(s.app_redis_url)
    try:
        streamed = "".join(c["delta"] for c in replay_chunks(client, job.id))
    finally:
        client.close()
    assert 0 < len(streamed) < len("word " * 400), "the stream did not stop at the cancel"


def test_resending_a_jobs_given_up_notification_delivers_it(s: Stack):
    job, _ = s.store.create_job(NewJob("inspiration", "u-ada", {"userId": "u-ada"}, "api"))
    s.store.start_attempt(job.id)
    note = ready_notification(job, "inspiration-ready")
    s.store.succeed(job.id, {"ideas": []}, Spend(), [note])
    with s.store.db.transaction() as session:  # as the sweeper leaves one it gave up
        session.get(NotificationOutbox, note.id).next_attempt_at = GIVEN_UP

    result = vamu(s.env, "notifications", "resend", str(job.id))

    assert result.returncode == 0, result.stderr
    assert "resent 1 notification(s)" in result.stdout
    delivery = s.webhook.wait_for(lambda d: d["id"] == str(note.id), timeout=20)
    assert delivery["event"] == "inspiration-ready"


def test_resend_without_job_ids_or_given_up_is_a_usage_error(s: Stack):
    result = vamu(s.env, "notifications", "resend")

    assert result.returncode == 2
    assert "Name one or more job ids, or pass --given-up." in result.stderr
