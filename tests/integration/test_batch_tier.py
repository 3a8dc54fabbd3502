"""The batch tier against the fake's batch wires for both vendors, on real PostgreSQL and Redis.

Each pass of the tier (`batches.service.tick`, what the notify worker's beat runs) is run here
in the test, so the test says when time moves on; the jobs it sends down the synchronous path
and the notifications it commits go through the stack's real Celery worker, to the webhook.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from tests.conftest import API_TOKEN, LLM_KEY, Stack
from tests.support.cli import vamu as run_cli
from tests.support.notify_worker import NotifyWorker
from tests.support.worker import wait_for_job
from vamu_tasks.batches.policy import BatchPolicy
from vamu_tasks.batches.service import BatchConfig, BatchDeps, TickReport, run_all_now, tick
from vamu_tasks.context.http import HttpNestApiClient
from vamu_tasks.domain import JobFilter, JobRecord, Usage
from vamu_tasks.jobs import cancel_job
from vamu_tasks.llm.anthropic import AnthropicProvider
from vamu_tasks.llm.anthropic_batch import AnthropicBatches
from vamu_tasks.llm.openai import OpenAIProvider
from vamu_tasks.llm.openai_batch import OpenAIBatches
from vamu_tasks.llm.pricing import cost_usd
from vamu_tasks.ports import BatchLLM
from vamu_tasks.store.batches import SqlAlchemyBatchStore
from vamu_tasks.store.repository import Database
from vamu_tasks.submit import submit_job
from vamu_tasks.task_runner import dispatch_notifications
from vamu_tasks.testing.answers import ideas, ideas_responder
from vamu_tasks.testing.fake_llm import Error, FakeLLMServer, Text

pytestmark = pytest.mark.integration

MODELS = {"openai": "gpt-5-mini", "anthropic": "claude-sonnet-4-6"}
# What the fake reports for each ideas answer (`ideas_responder`).
IDEAS_USAGE = Usage(400, 120, cache_read_tokens=100)


@dataclass
class Tier:
    s: Stack
    vendor: str
    deps: BatchDeps
    batches: SqlAlchemyBatchStore
    db: Database

    def submit(self, user: str = "u-ada", *, within: timedelta = timedelta(hours=6)) -> uuid.UUID:
        deliver_by = (datetime.now(UTC) + within).isoformat().replace("+00:00", "Z")
        data = {"userId": user, "count": 2, "deliverBy": deliver_by}
        job, task_id = submit_job(
            self.s.store, self.s.sender, "inspiration", data, source="cli", batch=POLICY
        )
        assert task_id is None  # waits for a batch: no Celery task
        return job.id

    def tick(self) -> TickReport:
        return tick(self.deps)

    def job(self, job_id: uuid.UUID) -> JobRecord:
        job = self.s.store.get_job(job_id)
        assert job is not None
        return job

    def events(self, job_id: uuid.UUID) -> list[str]:
        return [d["event"] for d in self.s.webhook.deliveries if d["data"]["jobId"] == str(job_id)]

    def batch_lines(self) -> list[str]:
        """The custom ids the vendor received, over every batch."""
        return [i for ids in self.s.llm.batches.custom_ids().values() for i in ids]


POLICY = BatchPolicy(sync_margin_s=60)


def batch_api(vendor: str, llm: FakeLLMServer) -> BatchLLM:
    common = {"api_key": SecretStr(LLM_KEY), "model": MODELS[vendor], "strict_validation": True}
    if vendor == "openai":
        return OpenAIBatches(OpenAIProvider(base_url=llm.openai_base_url, **common))
    return AnthropicBatches(AnthropicProvider(base_url=llm.anthropic_base_url, **common))


@pytest.fixture(params=["openai", "anthropic"])
def tier(
    request: pytest.FixtureRequest, stack: Stack, fake_llm: FakeLLMServer, fake_api, pg_url: str
) -> Iterator[Tier]:
    fake_llm.set_responder(ideas_responder)
    stack.webhook.fail_with = None
    db = Database.from_url(pg_url)
    batches = SqlAlchemyBatchStore(db, transports=["socketio", "webhook", "log"])
    context = HttpNestApiClient(base_url=fake_api.url, token=SecretStr(API_TOKEN))
    deps = BatchDeps(
        batches=batches,
        jobs=stack.store,
        api=batch_api(request.param, fake_llm),
        context=context,
        sender=stack.sender,
        notify=lambda ids: dispatch_notifications(stack.app, ids),
        config=BatchConfig(
            max_jobs=50,
            max_wait_s=0,
            poll_interval_s=0,
            sync_margin_s=60,
            max_output_tokens=2048,
            hold_s=30,
        ),
    )
    yield Tier(stack, request.param, deps, batches, db)
    # Nothing of this test is left for the next one's passes to find.
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE ai_jobs SET status = 'cancelled' WHERE status = 'batched'"))
        conn.execute(sa.text("UPDATE llm_batches SET status = 'ended' WHERE status <> 'ended'"))
    context.close()
    db.close()


def half_of_sync_cost(vendor: str, usage: Usage = IDEAS_USAGE) -> Decimal:
    cost = cost_usd(MODELS[vendor], usage, batch=True)
    assert cost is not None
    return cost


def test_waiting_jobs_go_out_in_one_batch_and_each_result_is_committed_and_notified_once(
    tier: Tier,
):
    ids = [tier.submit(user) for user in ("u-ada", "u-bruno", "u-ada")]
    assert {tier.job(i).status for i in ids} == {"batched"}

    first = tier.tick()

    assert len(first.submitted) == 1
    assert sorted(tier.batch_lines()) == sorted(str(i) for i in ids)
    (batch_id,) = {tier.job(i).batch_id for i in ids}
    assert batch_id is not None and {tier.job(i).status for i in ids} == {"batched"}
    # Nothing answered synchronously meanwhile.
    assert [r for r in tier.s.llm.requests if r.batch_id is None] == []

    tier.s.llm.complete_batches()
    second = tier.tick()

    assert second.committed == 3
    for job_id in ids:
        job = tier.job(job_id)
        assert job.status == "succeeded"
        assert job.result == {
            "ideas": [
                {k: v for k, v in idea.items() if v is not None} for idea in ideas(2)["ideas"]
            ]
        }
        assert (job.input_tokens, job.output_tokens) == (400, 120)
        # The batch's call was the job's one attempt, started when the batch was sent.
        assert job.attempts == 1 and job.started_at is not None
        assert job.started_at <= (job.finished_at or job.started_at)
        # Half the synchronous price, on the row.
        sync_cost = cost_usd(MODELS[tier.vendor], IDEAS_USAGE)
        assert sync_cost is not None
        assert job.cost_usd == half_of_sync_cost(tier.vendor) == sync_cost / 2
        tier.s.webhook.wait_for(lambda d, j=job_id: d["data"].get("jobId") == str(j))
    assert tier.tick().committed == 0
    time.sleep(1.0)  # time for a duplicate to arrive, if one were sent
    assert [tier.events(i) for i in ids] == [["inspiration-ready"]] * 3


def test_per_request_errors_fail_their_jobs_with_the_same_error_kinds_or_run_them_now(
    tier: Tier,
):
    ok, refused, overloaded = (tier.submit() for _ in range(3))
    tier.tick()
    # The batch's requests are answered in the order they were sent: the jobs' order.
    assert tier.batch_lines() == [str(ok), str(refused), str(overloaded)]
    tier.s.llm.push(
        Text.json(ideas(2), input_tokens=400, output_tokens=120),
        Error(400, "Unsupported parameter: 'temperature'.", error_type="invalid_request_error"),
        Error(
            529 if tier.vendor == "anthropic" else 500, "Overloaded", error_type="overloaded_error"
        ),
    )

    tier.s.llm.complete_batches()
    report = tier.tick()

    assert (report.committed, report.failed, report.to_sync) == (1, 1, 1)
    assert tier.job(ok).status == "succeeded"
    failed = tier.job(refused)
    assert (failed.status, failed.error_kind) == ("failed", "provider_error")
    assert "temperature" in (failed.error_message or "")
    tier.s.webhook.wait_for(lambda d: d["data"].get("jobId") == str(refused))
    assert tier.events(refused) == ["ai-job-failed"]
    # A transient error is retried as the synchronous job: it runs now, on the worker.
    retried = wait_for_job(tier.s.store, overloaded)
    assert retried.status == "succeeded" and retried.batch_id is not None
    assert retried.attempts == 1


def test_a_batch_the_vendor_expires_sends_its_unanswered_jobs_down_the_synchronous_path(
    tier: Tier,
):
    answered, unanswered = tier.submit(), tier.submit()
    (vendor_batch,) = tier.tick().submitted
    tier.s.llm.complete_batches(vendor_batch, custom_ids=[str(answered)])
    assert tier.tick().committed == 0  # still running: nothing settles before the batch ends

    tier.s.llm.expire_batches()
    report = tier.tick()

    assert (report.committed, report.to_sync) == (1, 1)
    assert tier.job(answered).cost_usd == half_of_sync_cost(tier.vendor)
    done = wait_for_job(tier.s.store, unanswered)
    assert done.status == "succeeded"
    # It ran at the synchronous price, as the primary provider's job.
    assert done.provider == "openai" and done.cost_usd == cost_usd("gpt-5-mini", IDEAS_USAGE)
    for job_id in (answered, unanswered):
        tier.s.webhook.wait_for(lambda d, j=job_id: d["data"].get("jobId") == str(j))
    assert [tier.events(answered), tier.events(unanswered)] == [["inspiration-ready"]] * 2


def test_a_job_whose_deliver_by_nears_runs_now_and_its_late_batch_result_is_discarded(
    tier: Tier,
):
    job_id = tier.submit()
    tier.tick()
    # Time passes: deliverBy is now closer than the margin (60 s), the batch still running.
    with tier.db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE ai_jobs SET deliver_by = now() + interval '30 seconds' WHERE id = :id"),
            {"id": job_id},
        )

    assert tier.tick().to_sync == 1
    done = wait_for_job(tier.s.store, job_id)
    assert done.status == "succeeded"
    sync_cost = done.cost_usd
    assert sync_cost is not None

    tier.s.llm.complete_batches()
    report = tier.tick()

    assert (report.committed, report.discarded) == (0, 1)
    late = tier.job(job_id)
    assert late.result == done.result and late.status == "succeeded"
    # The discarded answer was paid for: its cost is on the row too.
    assert late.cost_usd == sync_cost + half_of_sync_cost(tier.vendor)
    tier.s.webhook.wait_for(lambda d: d["data"].get("jobId") == str(job_id))
    time.sleep(1.0)
    assert tier.events(job_id) == ["inspiration-ready"]


def test_cancelling_a_batched_job_ends_it_and_its_late_result_is_discarded(tier: Tier):
    job_id = tier.submit()
    tier.tick()

    outcome = cancel_job(tier.s.store, job_id, "the user closed the app")

    assert outcome is not None and outcome.status == "cancelled"
    dispatch_notifications(tier.s.app, outcome.notifications)
    tier.s.llm.complete_batches()
    report = tier.tick()
    assert report.discarded == 1
    job = tier.job(job_id)
    assert (job.status, job.result) == ("cancelled", None)
    assert job.cost_usd == half_of_sync_cost(tier.vendor)
    tier.s.webhook.wait_for(lambda d: d["data"].get("jobId") == str(job_id))
    time.sleep(1.0)
    assert tier.events(job_id) == ["ai-job-failed"]


def test_two_beats_running_the_tier_at_once_send_each_job_once_and_commit_it_once(tier: Tier):
    ids = [tier.submit(("u-ada", "u-bruno", "u-chioma")[n % 3]) for n in range(12)]
    tier.deps.config = dataclasses.replace(tier.deps.config, max_jobs=4)

    def twice() -> list[TickReport]:
        reports: list[TickReport] = []
        threads = [threading.Thread(target=lambda: reports.append(tier.tick())) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        return reports

    sent = twice()
    assert sorted(tier.batch_lines()) == sorted(str(i) for i in ids)  # each job in one batch
    assert sum(len(r.submitted) for r in sent) == 3

    tier.s.llm.complete_batches()
    settled = twice()

    assert sum(r.committed for r in settled) == 12
    assert {tier.job(i).status for i in ids} == {"succeeded"}
    with tier.db.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT count(*) FROM notification_outbox WHERE job_id = ANY(:ids)"),
            {"ids": ids},
        ).scalar_one()
    assert rows == 12


def test_a_job_for_a_user_the_api_does_not_know_fails_before_it_is_batched(tier: Tier):
    job_id = tier.submit("u-missing")

    report = tier.tick()

    assert report.failed == 1 and report.submitted == []
    job = tier.job(job_id)
    assert (job.status, job.error_kind) == ("failed", "user_not_found")


def test_the_cli_enqueues_a_batched_job_and_rerun_batch_sends_the_rerun_to_the_tier(tier: Tier):
    env = {**tier.s.env}
    enqueued = run_cli(env, "enqueue", "inspiration", "--user-id", "u-ada", "--deliver-by", "6h")
    assert enqueued.returncode == 0, enqueued.stderr
    accepted = json.loads(enqueued.stdout)
    job_id = uuid.UUID(accepted["jobId"])
    assert (accepted["celeryTaskId"], accepted["status"]) == (None, "batched")
    job = tier.job(job_id)
    assert job.deliver_by is not None
    assert timedelta(hours=5, minutes=59) < job.deliver_by - datetime.now(UTC) <= timedelta(hours=6)
    # An operator reruns it in the tier once it ended.
    tier.tick()
    tier.s.llm.complete_batches()
    tier.tick()
    assert tier.job(job_id).status == "succeeded"

    rerun = run_cli(env, "rerun", str(job_id), "--force", "--batch", "--yes")

    assert rerun.returncode == 0, rerun.stderr
    assert "requeued 1 (1 in the batch tier), skipped 0" in rerun.stdout
    (again,) = [j for j in tier.s.store.list_jobs(JobFilter(limit=20)) if j.rerun_of == job_id]
    assert again.status == "batched" and again.request["deliverBy"] != job.request["deliverBy"]
    refused = run_cli(env, "rerun", str(job_id), "--force", "--batch", "--model", "gpt-5", "--yes")
    assert refused.returncode == 2 and "drop --provider and --model" in refused.stderr


def test_the_cli_refuses_batch_on_the_offline_provider_and_creates_no_job(tier: Tier):
    before = len(tier.s.store.list_jobs(JobFilter(limit=1000)))
    result = run_cli(
        {**tier.s.env, "VAMU_LLM_PROVIDER": "offline", "VAMU_LLM_FALLBACK": ""},
        "enqueue",
        "inspiration",
        "--user-id",
        "u-ada",
        "--batch",
    )
    assert result.returncode == 1
    assert "set VAMU_LLM_PROVIDER to openai or anthropic" in result.stderr
    assert len(tier.s.store.list_jobs(JobFilter(limit=1000))) == before


def test_a_worker_killed_while_its_batch_is_out_loses_nothing_and_commits_each_job_once(
    tier: Tier, tmp_path: Path
):
    # Notify workers (`python -m workers.notify`): the one leading housekeeping runs the tier
    # every half second, on its own broker keys (and so its own housekeeping lease).
    env = {
        **os.environ,
        **tier.s.env,
        "VAMU_LLM_PROVIDER": tier.vendor,
        "VAMU_LLM_FALLBACK": "",
        "VAMU_BROKER_KEY_PREFIX": f"batch-{uuid.uuid4().hex[:8]}:",
        "VAMU_BATCH_MAX_WAIT_S": "0",
        "VAMU_BATCH_POLL_INTERVAL_S": "0.5",
    }
    ids = [tier.submit(user) for user in ("u-ada", "u-bruno", "u-chioma", "u-ada")]
    first = NotifyWorker(env, tmp_path, "first")
    try:
        wait_until(lambda: batch_status(tier) == "submitted", "the vendor has the batch")
        first.process.kill()  # SIGKILL: no shutdown, the batch is out, the lease left to expire
        first.process.wait(10)
    finally:
        first.stop()
    assert {tier.job(i).status for i in ids} == {"batched"}

    tier.s.llm.complete_batches()
    second = NotifyWorker(env, tmp_path, "second")
    try:
        for job_id in ids:
            assert wait_for_job(tier.s.store, job_id, timeout=60).status == "succeeded"
            tier.s.webhook.wait_for(lambda d, j=job_id: d["data"].get("jobId") == str(j))
        time.sleep(1.5)  # three more passes: a second commit or send would show now
        url = f"http://127.0.0.1:{second.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as scraped:
            metrics = scraped.read().decode()
    finally:
        second.stop()

    assert [tier.events(i) for i in ids] == [["inspiration-ready"]] * len(ids)
    assert sum(len(lines) for lines in tier.s.llm.batches.custom_ids().values()) == len(ids)
    assert {tier.job(i).cost_usd for i in ids} == {half_of_sync_cost(tier.vendor)}
    # The second worker committed them all, and says so.
    committed = f'vamu_batch_jobs_total{{outcome="committed",provider="{tier.vendor}"}} 4.0'
    assert committed in metrics
    assert "Task vamu.batches.tick" not in second.text()  # in process, not a task


def batch_status(tier: Tier) -> str | None:
    with tier.db.engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT status FROM llm_batches WHERE status <> 'ended' ORDER BY created_at")
        ).scalar()


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_the_reaper_leaves_batched_jobs_alone_however_long_they_wait(tier: Tier):
    job_id = tier.submit()
    with tier.db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE ai_jobs SET created_at = now() - interval '2 hours' WHERE id = :id"),
            {"id": job_id},
        )

    # Orphans, overdue retries and jobs queued too long: none of them is a batched job.
    found = tier.s.store.reap(grace_s=0, stale_queued_s=1)
    unstarted = tier.s.store.unstarted_jobs(older_than_s=1)

    assert job_id not in {i for i, _ in found} | {i for i, _ in unstarted}
    assert tier.job(job_id).status == "batched"


def test_a_batch_cancelled_at_the_vendor_sends_its_jobs_down_the_synchronous_path(tier: Tier):
    ids = [tier.submit(), tier.submit()]
    (vendor_batch,) = tier.tick().submitted
    # Someone cancels it in the vendor's console; the vendor then ends it, nothing answered.
    tier.deps.api.cancel(vendor_batch)
    tier.s.llm.complete_batches(vendor_batch)

    report = tier.tick()

    assert (report.committed, report.to_sync) == (0, 2)
    for job_id in ids:
        done = wait_for_job(tier.s.store, job_id)
        assert done.status == "succeeded" and done.cost_usd == cost_usd("gpt-5-mini", IDEAS_USAGE)


def test_without_a_batch_api_every_batched_job_runs_now_rather_than_wait_past_deliver_by(
    tier: Tier,
):
    # Accepted as batched by a bridge configured for a vendor, then the housekeeping leader
    # turns out to run the offline provider: nothing will ever take the job into a batch.
    job_id = tier.submit()

    sent = run_all_now(tier.batches, tier.s.sender, hold_s=30)

    assert sent == 1
    assert wait_for_job(tier.s.store, job_id).status == "succeeded"
