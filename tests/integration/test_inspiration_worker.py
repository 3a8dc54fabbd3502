"""The inspiration job through a real Celery worker, PostgreSQL, Redis and the wire fakes."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from kombu import Connection, Exchange, Queue

from tests.conftest import API_TOKEN, LLM_KEY, WEBHOOK_SECRET, Stack
from tests.support.worker import wait_for_job
from vamu_tasks.domain import NewJob, Notification, Spend, Usage, event_id_for
from vamu_tasks.features import FEATURES, SWEEP_TASK
from vamu_tasks.llm.pricing import cost_usd
from vamu_tasks.testing.answers import ideas, ideas_responder
from vamu_tasks.testing.fake_llm import Error, Hang, Text

pytestmark = pytest.mark.integration


@pytest.fixture
def s(stack: Stack, fake_llm, fake_api) -> Stack:
    """The running stack with fresh fakes, answering valid ideas unless a test scripts otherwise."""
    fake_llm.set_responder(ideas_responder)
    stack.webhook.fail_with = None
    return stack


def webhook_events(s: Stack, job_id: uuid.UUID) -> list[str]:
    return [d["event"] for d in s.webhook.deliveries if d["data"]["jobId"] == str(job_id)]


def llm_apis(s: Stack) -> list[str]:
    return [r.api for r in s.llm.requests]


def test_an_inspiration_job_ends_succeeded_with_ideas_spend_and_a_signed_notification(s: Stack):
    job_id = s.submit({"userId": "u-ada", "count": 2, "hint": "jazz please"})

    job = wait_for_job(s.store, job_id)

    assert job.status == "succeeded"
    assert job.result == {
        "ideas": [
            {"title": "Idea 1", "description": "Description of idea 1.", "category": "music",
             "when": "Friday evening"},
            {"title": "Idea 2", "description": "Description of idea 2.", "category": "music"},
        ]
    }
    assert (job.attempts, job.error_kind) == (1, None)
    assert (job.provider, job.model) == ("openai", "gpt-5-mini")
    assert (job.input_tokens, job.output_tokens) == (400, 120)
    # The cache's part of the input is on the row, priced at the cache read price.
    assert (job.cache_read_tokens, job.cache_write_tokens) == (100, 0)
    expected_cost = cost_usd("gpt-5-mini", Usage(400, 120, cache_read_tokens=100))
    assert job.cost_usd == expected_cost and job.cost_usd > Decimal(0)
    assert job.started_at is not None and job.finished_at is not None
    delivery = s.webhook.wait_for(lambda d: d["data"].get("jobId") == str(job_id))
    assert delivery == {
        "id": str(event_id_for(job_id, "inspiration-ready")),
        "event": "inspiration-ready",
        "userId": "u-ada",
        "data": {"jobId": str(job_id), "feature": "inspiration", "status": "succeeded"},
    }
    (llm_request,) = s.llm.requests
    assert llm_request.headers["authorization"] == f"Bearer {LLM_KEY}"
    assert "jazz please" in str(llm_request.body["input"])
    (api_request,) = s.api.requests
    assert api_request.path == "/internal/users/u-ada/context"
    assert api_request.headers["authorization"] == f"Bearer {API_TOKEN}"


def test_malformed_model_output_gets_one_repair_and_then_succeeds(s: Stack):
    s.llm.push(Text("here are your ideas: {oops", input_tokens=300, output_tokens=10))

    job = wait_for_job(s.store, s.submit({"userId": "u-bruno", "count": 1}))

    assert job.status == "succeeded"
    assert len(job.result["ideas"]) == 1
    assert llm_apis(s) == ["openai.responses", "openai.responses"]
    assert "did not match the required JSON schema" in str(s.llm.requests[1].body["input"])
    assert (job.input_tokens, job.output_tokens) == (300 + 400, 10 + 120)


def test_output_still_malformed_after_the_repair_fails_as_schema_invalid(s: Stack):
    s.llm.push(Text("nope"), Text.json({"ideas": []}))

    job_id = s.submit({"userId": "u-bruno", "count": 1})
    job = wait_for_job(s.store, job_id)

    assert (job.status, job.error_kind, job.attempts) == ("failed", "schema_invalid", 1)
    assert "ideas" in job.error_message
    assert job.input_tokens is not None and job.input_tokens > 0
    failed = s.webhook.wait_for(lambda d: d["data"].get("jobId") == str(job_id))
    assert failed["event"] == "ai-job-failed"
    assert failed["data"] == {"jobId": str(job_id), "feature": "inspiration",
                              "errorKind": "schema_invalid"}


def test_a_rate_limited_call_runs_again_no_sooner_than_retry_after(s: Stack):
    s.llm.push(Error(429, retry_after=1.0))

    job = wait_for_job(s.store, s.submit({"userId": "u-ada", "count": 1}))

    assert (job.status, job.attempts, job.provider) == ("succeeded", 2, "openai")
    first, second = s.llm.requests
    assert second.received_at - first.received_at >= 1.0


def test_a_provider_outage_falls_back_to_anthropic_after_the_retry_budget(s: Stack):
    s.llm.push(Error(500), Error(503), Error(500))

    job = wait_for_job(s.store, s.submit({"userId": "u-chioma", "count": 2}))

    assert job.status == "succeeded"
    assert (job.provider, job.model, job.attempts) == ("anthropic", "claude-sonnet-4-6", 4)
    assert llm_apis(s) == ["openai.responses"] * 3 + ["anthropic.messages"]
    assert s.llm.requests[-1].body["output_config"]["format"]["type"] == "json_schema"


def test_a_job_fails_with_its_kind_when_both_providers_stay_down(s: Stack):
    s.llm.set_responder(lambda request: Error(529 if "anthropic" in request.api else 503))

    job_id = s.submit({"userId": "u-dev", "count": 1})
    job = wait_for_job(s.store, job_id)

    assert (job.status, job.error_kind) == ("failed", "provider_error")
    # Three tries on each provider: the fallback gets the same retry budget as the primary.
    assert job.attempts == 6
    assert llm_apis(s) == ["openai.responses"] * 3 + ["anthropic.messages"] * 3
    assert "gave up after 5 retries" in job.error_message
    s.webhook.wait_for(lambda d: d["data"].get("jobId") == str(job_id))
    assert webhook_events(s, job_id) == ["ai-job-failed"]


def test_a_prompt_too_long_for_the_model_fails_at_once_as_context_length(s: Stack):
    s.llm.push(Error(400, error_type="context_length_exceeded", message="too long"))

    job = wait_for_job(s.store, s.submit({"userId": "u-ada", "count": 1}))

    assert (job.status, job.error_kind, job.attempts) == ("failed", "context_length", 1)
    assert len(s.llm.requests) == 1


def test_an_unknown_user_fails_as_user_not_found_without_calling_the_llm(s: Stack):
    job_id = s.submit({"userId": "u-ghost", "count": 1})

    job = wait_for_job(s.store, job_id)

    assert (job.status, job.error_kind, job.attempts) == ("failed", "user_not_found", 1)
    assert "u-ghost" in job.error_message
    assert s.llm.requests == []
    delivery = s.webhook.wait_for(lambda d: d["data"].get("jobId") == str(job_id))
    assert delivery["data"]["errorKind"] == "user_not_found"


def test_an_api_outage_is_retried_until_the_api_answers(s: Stack):
    s.api.fail_next(3, status=503, path_prefix="/internal/users")

    job = wait_for_job(s.store, s.submit({"userId": "u-ada", "count": 1}))

    assert (job.status, job.attempts) == ("succeeded", 2)
    assert len(s.api.requests) == 4


def test_an_api_that_stays_down_fails_the_job_as_upstream_api(s: Stack):
    s.api.fail_next(100, status=502, path_prefix="/internal/users")

    job = wait_for_job(s.store, s.submit({"userId": "u-ada", "count": 1}))

    assert (job.status, job.error_kind, job.attempts) == ("failed", "upstream_api", 3)
    assert s.llm.requests == []


def test_a_timed_out_llm_call_is_retried(s: Stack):
    s.llm.push(Hang(2.5))

    job = wait_for_job(s.store, s.submit({"userId": "u-ada", "count": 1}))

    assert (job.status, job.attempts) == ("succeeded", 2)


def test_a_redelivered_task_of_a_finished_job_calls_no_llm_and_notifies_once(s: Stack):
    job_id = s.submit({"userId": "u-ada", "count": 1})
    wait_for_job(s.store, job_id)
    s.webhook.wait_for(lambda d: d["data"].get("jobId") == str(job_id))

    task_ids = [s.sender.send(FEATURES["inspiration"], job_id) for _ in range(2)]
    deadline = time.monotonic() + 15
    while not all(f"{t}] succeeded" in s.worker.log_text() for t in task_ids):
        assert time.monotonic() < deadline, "the redelivered tasks did not run"
        time.sleep(0.1)

    job = s.store.get_job(job_id)
    assert job is not None and (job.status, job.attempts) == ("succeeded", 1)
    assert len(s.llm.requests) == 1
    time.sleep(0.5)
    assert webhook_events(s, job_id) == ["inspiration-ready"]


def test_a_committed_notification_whose_send_was_lost_is_delivered_by_the_outbox_sweep(
    s: Stack,
):
    job, _ = s.store.create_job(NewJob("inspiration", "u-ada", {"userId": "u-ada"}, "api"))
    s.store.start_attempt(job.id)
    note = Notification(event_id_for(job.id, "inspiration-ready"), "inspiration-ready", "u-ada",
                        job.id, {"jobId": str(job.id), "feature": "inspiration",
                                 "status": "succeeded"})
    # Committed with its notification, as a worker that died before enqueueing delivery leaves it.
    s.store.succeed(job.id, ideas(1), Spend(), [note])
    time.sleep(1.2)  # older than VAMU_OUTBOX_STALE_AFTER_S

    s.app.send_task(SWEEP_TASK, queue="notify")

    delivery = s.webhook.wait_for(lambda d: d["data"].get("jobId") == str(job.id))
    assert delivery["id"] == str(note.id)
    deadline = time.monotonic() + 10
    while s.store.pending_notifications(job.id):
        assert time.monotonic() < deadline, "the notification stayed pending"
        time.sleep(0.1)


def test_a_webhook_receiver_that_is_down_gets_the_notification_when_it_recovers(s: Stack):
    s.webhook.fail_with = 503
    job_id = s.submit({"userId": "u-ada", "count": 1})
    wait_for_job(s.store, job_id)
    time.sleep(1.0)
    assert webhook_events(s, job_id) == []

    s.webhook.fail_with = None

    delivery = s.webhook.wait_for(lambda d: d["data"].get("jobId") == str(job_id), timeout=20)
    assert delivery["event"] == "inspiration-ready"


def test_a_pickled_message_is_refused_and_its_job_never_runs(s: Stack):
    job, _ = s.store.create_job(NewJob("inspiration", "u-ada", {"userId": "u-ada"}, "api"))
    with Connection(s.env["VAMU_BROKER_URL"], transport_options={
            "global_keyprefix": s.env["VAMU_BROKER_KEY_PREFIX"]}) as conn:
        producer = conn.Producer(serializer="pickle")
        queue = Queue("inspiration", Exchange("inspiration", "direct"),
                      routing_key="inspiration")
        producer.publish(
            {"ref": {"job_id": str(job.id)}}, routing_key="inspiration", exchange="inspiration",
            declare=[queue],
            headers={"task": "vamu.inspiration.generate", "id": str(uuid.uuid4()),
                     "args": [], "kwargs": {}},
        )
    deadline = time.monotonic() + 10
    while "untrusted content of type pickle" not in s.worker.log_text():
        assert time.monotonic() < deadline, "the worker did not refuse the pickled message"
        time.sleep(0.1)

    assert s.store.get_job(job.id).status == "queued"
    assert s.llm.requests == []


def test_celery_inspect_ping_reaches_the_worker(s: Stack):
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "vamu_tasks", "inspect", "ping", "--timeout", "5"],
        env={**s.worker.env}, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "pong" in out.stdout


def test_no_secret_appears_in_the_worker_log_or_the_job_rows(s: Stack, pg_url: str):
    wait_for_job(s.store, s.submit({"userId": "u-ada", "count": 1}))
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT row_to_json(j)::text FROM ai_jobs j")).scalars().all()
        outbox = conn.execute(
            sa.text("SELECT row_to_json(o)::text FROM notification_outbox o")
        ).scalars().all()
    engine.dispose()
    everything = s.worker.log_text() + "".join(rows) + "".join(outbox)
    for secret in (LLM_KEY, API_TOKEN, WEBHOOK_SECRET):
        assert secret not in everything


def test_at_info_a_job_logs_celerys_one_line_and_no_line_per_http_call(s: Stack):
    job_id = s.submit({"userId": "u-ada", "count": 1})
    wait_for_job(s.store, job_id)
    log = s.worker.wait_for_log(f"[{job_id}] succeeded")

    lines = [line for line in log.splitlines() if str(job_id) in line]

    assert sum(f"[{job_id}] succeeded" in line for line in lines) == 1
    assert not [line for line in lines if f"[{job_id}] received" in line]
    # The context fetch and the LLM call went over HTTP, but not into the log at INFO.
    assert not [line for line in lines if "HTTP Request:" in line], lines
