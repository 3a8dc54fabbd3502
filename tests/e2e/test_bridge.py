"""NestJS → BullMQ → bridge → Celery, with the real Node `bullmq` producer on the NestJS side."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

import pytest
import redis
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError

from tests.conftest import Stack
from tests.support.bullmq import BridgeProcess, produce
from tests.support.node import require_node_modules
from tests.support.services import REDIS_APP_DB, delete_keys, free_port, scrape
from tests.support.socketio import SocketIOListener
from tests.support.worker import wait_for_job
from vamu_tasks.bridge.contract import parse_failed_reason
from vamu_tasks.domain import LOCALE_PATTERN, NO_NUL_PATTERN
from vamu_tasks.llm.spend_budget import Limits, RedisSpendBudget
from vamu_tasks.testing.answers import ideas_responder

pytestmark = pytest.mark.e2e

QUOTA = 25
SYNC_TIMEOUT_S = 3


@dataclass
class Bridged:
    stack: Stack
    bridge: BridgeProcess
    queue: str
    sync_queue: str

    def produce(self, jobs: list[dict], *, sync: bool = False, **kw) -> list[dict]:
        return produce(self.stack.app_redis_url, self.sync_queue if sync else self.queue, jobs,
                       sync=sync, **kw)

    def rows_for(self, refs: list[str]) -> list[tuple]:
        engine = sa.create_engine(self.stack.env["VAMU_DATABASE_URL"])
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id, source_ref, status FROM ai_jobs "
                        "WHERE source = 'bullmq' AND source_ref = ANY(:refs)"),
                {"refs": refs},
            ).all()
        engine.dispose()
        return [tuple(r) for r in rows]


@pytest.fixture(scope="module")
def bridge_env(stack: Stack) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {
        **stack.env,
        "VAMU_BULLMQ_QUEUE": f"vamu-ai-{suffix}",
        "VAMU_BULLMQ_SYNC_QUEUE": f"vamu-ai-sync-{suffix}",
        "VAMU_QUOTA_JOBS_PER_USER_PER_HOUR": str(QUOTA),
        # Counters of this module's own: other runs in the same hour count the same users.
        "VAMU_QUOTA_KEY_PREFIX": f"vamu:quota:{suffix}",
        # A daily spend budget the bridge checks before it accepts a job (the workers of the
        # session's stack do not spend against it).
        "VAMU_BUDGET_USER_USD_PER_DAY": "0.50",
        "VAMU_BUDGET_KEY_PREFIX": f"vamu:spend:{suffix}",
        "VAMU_BRIDGE_SYNC_TIMEOUT_S": str(SYNC_TIMEOUT_S),
        # Short locks so a killed bridge's jobs come back within seconds in the tests.
        "VAMU_BRIDGE_LOCK_DURATION_MS": "2000",
        "VAMU_BRIDGE_STALLED_INTERVAL_MS": "1000",
        "VAMU_METRICS_PORT": str(free_port()),
    }


@pytest.fixture(scope="module")
def running_bridge(bridge_env, tmp_path_factory) -> Iterator[BridgeProcess]:
    log_path = tmp_path_factory.mktemp("bridge") / "bridge.log"
    with BridgeProcess(bridge_env, log_path) as bridge:
        yield bridge
    suffix = bridge_env["VAMU_BULLMQ_QUEUE"].rsplit("-", 1)[1]
    delete_keys(REDIS_APP_DB, f"bull:*{suffix}*", f"vamu:quota:{suffix}:*",
                f"vamu:spend:{suffix}:*")


@pytest.fixture
def b(stack: Stack, running_bridge: BridgeProcess, bridge_env, fake_llm, fake_api) -> Bridged:
    fake_llm.set_responder(ideas_responder)
    return Bridged(stack, running_bridge, bridge_env["VAMU_BULLMQ_QUEUE"],
                   bridge_env["VAMU_BULLMQ_SYNC_QUEUE"])


def test_a_nestjs_job_completes_at_once_and_the_users_room_hears_the_ideas_are_ready(
    b: Bridged,
):
    with SocketIOListener(b.stack.app_redis_url, ["u-ada"], key=b.stack.socketio_key) as room:
        (outcome,) = b.produce([{"name": "inspiration.generate",
                                 "data": {"userId": "u-ada", "count": 2}}])

        assert outcome["state"] == "completed", outcome
        job_id = uuid.UUID(outcome["returnvalue"]["jobId"])
        assert outcome["returnvalue"]["celeryTaskId"]
        job = wait_for_job(b.stack.store, job_id)
        assert (job.status, job.source) == ("succeeded", "bullmq")
        # The package set the BullMQ job id from the requestId it generated into the data.
        assert job.source_ref == f"request:{outcome['id']}"
        assert job.request["requestId"] == outcome["id"] == outcome["returnvalue"]["requestId"]
        assert len(job.result["ideas"]) == 2
        event = room.wait_for("inspiration-ready", user="u-ada")
        assert event["data"]["jobId"] == str(job_id)


def test_an_unknown_job_name_fails_without_retries_and_says_so(b: Bridged):
    (outcome,) = b.produce([{"name": "inspiration.imagine", "data": {"userId": "u-ada"},
                             "opts": {"attempts": 3}}])

    assert outcome["state"] == "failed"
    assert outcome["failedReason"].startswith("unknown_job: 'inspiration.imagine'")
    assert "inspiration.generate" in outcome["failedReason"]
    assert outcome["attemptsMade"] == 1


def test_invalid_job_data_fails_with_the_field_errors_and_creates_no_row(b: Bridged):
    (outcome,) = b.produce([{"name": "inspiration.generate",
                             "data": {"userId": "u-ada", "count": 0, "hint": "x" * 501,
                                      "requestId": f"bad-{uuid.uuid4().hex}"},
                             "opts": {"attempts": 3}}])

    assert outcome["state"] == "failed"
    reason = outcome["failedReason"]
    assert reason.startswith("invalid_job: ")
    assert "count: Input should be greater than or equal to 1" in reason
    assert "hint: String should have at most 500 characters" in reason
    assert outcome["attemptsMade"] == 1
    assert b.rows_for([f"request:{outcome['id']}"]) == []


def test_data_its_json_schema_refuses_is_refused_in_json_terms_and_bcp_47_locales_pass(
    b: Bridged,
):
    outcomes = b.produce([
        {"name": "inspiration.generate", "data": {"userId": "u-ada", "count": "3"}},
        {"name": "inspiration.generate", "data": {"userId": "u-ada", "locale": "not a locale!!"}},
        # Not an object: only plain Queue.add can send it, the typed client cannot.
        {"name": "inspiration.generate", "data": ["u-ada"], "raw": True},
        {"name": "inspiration.generate",
         "data": {"userId": "u-ada", "count": 1, "locale": "zh-Hant-TW"}},
    ])

    assert [o.get("failedReason") for o in outcomes[:3]] == [
        "invalid_job: count: expected integer, got string",
        "invalid_job: locale: expected a BCP 47 language tag, such as en-GB, pt-BR or zh-Hant-TW",
        "invalid_job: job data must be a JSON object, got array",
    ]
    assert [o["attemptsMade"] for o in outcomes[:3]] == [1, 1, 1]
    assert outcomes[3]["state"] == "completed", outcomes[3]
    job = wait_for_job(b.stack.store, uuid.UUID(outcomes[3]["returnvalue"]["jobId"]))
    assert (job.status, job.request["locale"]) == ("succeeded", "zh-Hant-TW")


def test_the_schema_patterns_match_the_same_strings_in_javascript_as_in_the_bridge():
    # The bridge runs the patterns on pydantic's Rust engine; NestJS validators (ajv) run
    # them as ECMA-262 RegExps with the `u` flag. The two dialects must agree.
    samples = ["en-GB", "pt-BR", "zh-Hant-TW", "es-419", "de", "de-CH-1996", "en-US-x-twain",
               "not a locale!!", "en_GB", "", "en-", "en-GB\n", "\nen-GB", "en-\u0000",
               "a\u0000b", "line\nbreak", "😀", "é", "x" * 40]
    patterns = [LOCALE_PATTERN, NO_NUL_PATTERN]
    script = ("const [ps, ss] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(ps.map(p => ss.map(s => new RegExp(p, 'u').test(s)))));")
    node = subprocess.run([str(require_node_modules()), "-e", script], capture_output=True,
                          text=True, input=json.dumps([patterns, samples]), check=True)

    in_python = [[matches(p, s) for s in samples] for p in patterns]
    assert json.loads(node.stdout) == in_python


def matches(pattern: str, value: str) -> bool:
    try:
        TypeAdapter(Annotated[str, Field(pattern=pattern)]).validate_python(value)
    except ValidationError:
        return False
    return True


def test_a_user_over_the_hourly_quota_is_refused_with_quota_exceeded(b: Bridged):
    user = f"quota-{uuid.uuid4().hex[:8]}"
    jobs = [{"name": "inspiration.generate", "data": {"userId": user}}] * (QUOTA + 2)

    outcomes = b.produce(jobs)

    states = [o["state"] for o in outcomes]
    assert states.count("completed") == QUOTA
    refused = [o for o in outcomes if o["state"] == "failed"]
    assert len(refused) == 2
    assert all(o["failedReason"] == f"quota_exceeded: user '{user}' already started {QUOTA} "
               "jobs this hour" for o in refused)


def test_a_user_over_todays_spend_budget_is_refused_before_a_row_or_a_token(b: Bridged):
    spender, other = f"spender-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    # What the workers' calls have settled today: the user's whole $0.50.
    prefix = b.bridge.env["VAMU_BUDGET_KEY_PREFIX"]
    client = redis.Redis.from_url(b.stack.app_redis_url)
    budget = RedisSpendBudget(client, Limits(Decimal("0.50")), prefix=prefix)
    client.incrby(f"{prefix}:user:{spender}:{budget._day()}:spent", 500_000)
    client.close()

    refused, accepted = b.produce([
        {"name": "inspiration.generate", "data": {"userId": spender, "requestId": f"r-{spender}"}},
        {"name": "inspiration.generate", "data": {"userId": other}},
    ])

    assert refused["state"] == "failed"
    reason = parse_failed_reason(refused["failedReason"])
    assert (reason.kind, reason.job_id) == ("budget_exceeded", None)
    assert "VAMU_BUDGET_USER_USD_PER_DAY" in reason.message
    assert accepted["state"] == "completed"
    assert b.rows_for([f"request:r-{spender}"]) == []


def test_the_same_bullmq_job_id_or_request_id_makes_one_job_row(b: Bridged):
    job_id, request_id = f"dup-{uuid.uuid4().hex}", f"req-{uuid.uuid4().hex}"
    jobs = [
        # A BullMQ jobId without requestId: plain Queue.add (the client always sends both).
        {"name": "inspiration.generate", "data": {"userId": "u-ada"}, "opts": {"jobId": job_id},
         "raw": True},
        {"name": "inspiration.generate", "data": {"userId": "u-ada"}, "opts": {"jobId": job_id},
         "raw": True},
        {"name": "inspiration.generate", "data": {"userId": "u-ada", "requestId": request_id}},
        {"name": "inspiration.generate", "data": {"userId": "u-ada", "requestId": request_id}},
    ]

    outcomes = b.produce(jobs)

    assert [o["state"] for o in outcomes] == ["completed"] * 4
    by_job_id = {o["returnvalue"]["jobId"] for o in outcomes[:2]}
    by_request_id = {o["returnvalue"]["jobId"] for o in outcomes[2:]}
    assert len(by_job_id) == 1 and len(by_request_id) == 1
    rows = b.rows_for([f"bullmq:{b.queue}:{job_id}", f"request:{request_id}"])
    assert len(rows) == 2


def test_a_job_added_after_the_bridge_idled_past_the_socket_timeout_is_picked_up_at_once(
    b: Bridged,
):
    b.produce([{"name": "inspiration.generate", "data": {"userId": "u-ada"}}])
    time.sleep(6.5)  # longer than redis-py 8's default socket_timeout of 5 s

    (outcome,) = b.produce([{"name": "inspiration.generate", "data": {"userId": "u-ada"}}])

    assert outcome["state"] == "completed"
    # With the pitfall, the blocked wait times out and pickup slips by 5-10 s.
    assert outcome["finishedAt"] - outcome["addedAt"] < 2000


def test_a_sync_job_completes_with_the_ideas_themselves_and_also_emits_its_event(b: Bridged):
    with SocketIOListener(b.stack.app_redis_url, ["u-bruno"], key=b.stack.socketio_key) as room:
        (outcome,) = b.produce([{"name": "inspiration.generate",
                                 "data": {"userId": "u-bruno", "count": 2}}], sync=True)

        assert outcome["state"] == "completed", outcome
        value = outcome["returnvalue"]
        assert value["status"] == "succeeded"
        assert [i["title"] for i in value["result"]["ideas"]] == ["Idea 1", "Idea 2"]
        job = b.stack.store.get_job(uuid.UUID(value["jobId"]))
        assert job is not None and job.result == value["result"]
        # docs/contracts.md says so: the result reaches NestJS twice, handle it once.
        event = room.wait_for("inspiration-ready", user="u-bruno",
                              predicate=lambda e: e["data"]["jobId"] == value["jobId"])
        assert event["data"]["status"] == "succeeded"


def test_a_sync_job_whose_job_fails_fails_with_the_error_kind(b: Bridged):
    (outcome,) = b.produce([{"name": "inspiration.generate", "data": {"userId": "u-ghost"}}],
                           sync=True)

    assert outcome["state"] == "failed"
    kind, _, job_id = parse_failed_reason(outcome["failedReason"])
    assert kind == "user_not_found"
    assert wait_for_job(b.stack.store, job_id).error_kind == "user_not_found"


def test_a_sync_job_that_takes_too_long_fails_with_sync_timeout_and_the_job_goes_on(
    b: Bridged,
):
    b.stack.llm.latency = SYNC_TIMEOUT_S + 0.5
    try:
        (outcome,) = b.produce([{"name": "inspiration.generate", "data": {"userId": "u-ada"}}],
                               sync=True)
    finally:
        b.stack.llm.latency = 0.0

    assert outcome["state"] == "failed"
    kind, message, job_id = parse_failed_reason(outcome["failedReason"])
    assert (kind, message) == ("sync_timeout", f"did not finish within {SYNC_TIMEOUT_S:g}s; "
                                               "it goes on, and the app is notified when it ends")
    assert job_id is not None
    assert wait_for_job(b.stack.store, job_id).status == "succeeded"


def test_request_id_and_traceparent_reach_the_row_the_celery_headers_and_every_log(b: Bridged):
    request_id = f"req-{uuid.uuid4().hex}"
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    (outcome,) = b.produce([{"name": "inspiration.generate",
                             "data": {"userId": "u-ada", "requestId": request_id,
                                      "traceparent": traceparent}}])

    job = wait_for_job(b.stack.store, uuid.UUID(outcome["returnvalue"]["jobId"]))
    assert job.request["requestId"] == request_id
    assert job.request["traceparent"] == traceparent
    assert any(traceparent in line and request_id in line
               for line in b.bridge.log_text().splitlines())
    deadline = time.monotonic() + 10
    while True:
        worker_lines = [line for line in b.stack.worker.log_text().splitlines()
                        if traceparent in line]
        # The job's task, its notification sent from the same worker (the log transport's
        # line), and the webhook's delivery task.
        names = ("vamu.inspiration.generate", "notification inspiration-ready",
                 "vamu.notify.deliver")
        seen = {name for name in names if any(name in line for line in worker_lines)}
        if len(seen) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert seen == set(names)
    # At INFO, one Celery line for the job's task: that it succeeded, not also that it arrived.
    task_lines = [line for line in b.stack.worker.log_text().splitlines()
                  if f"vamu.inspiration.generate[{job.id}]" in line]
    assert len(task_lines) == 1, task_lines
    assert "succeeded in" in task_lines[0]


junk_value = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)
# Junk goes through plain Queue.add: the typed client cannot send most of it.
junk_job = st.fixed_dictionaries({
    "raw": st.just(True),
    "name": st.sampled_from(["inspiration.generate", "chatbot.reply", "", "x" * 40]) | st.text(
        max_size=12),
    "data": st.dictionaries(
        st.sampled_from(["userId", "count", "hint", "locale", "requestId", "extra"]), junk_value,
        max_size=4,
    ) | junk_value,
})


# Each example is one Node run: few examples, and no shrinking (it would rerun Node many times).
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate], database=None)
@given(jobs=st.lists(junk_job, min_size=20, max_size=20))
def test_junk_payloads_are_refused_with_a_reason_and_the_bridge_keeps_running(b: Bridged, jobs):
    outcomes = b.produce(jobs)

    for job, outcome in zip(jobs, outcomes, strict=True):
        if outcome["state"] == "completed":
            assert job["name"] == "inspiration.generate"
            assert b.stack.store.get_job(uuid.UUID(outcome["returnvalue"]["jobId"])) is not None
        else:
            assert outcome["failedReason"].split(":")[0] in {
                "invalid_job", "unknown_job", "quota_exceeded"}, outcome
            assert outcome["attemptsMade"] == 1
    assert b.bridge.process is not None and b.bridge.process.poll() is None


@pytest.fixture
def own_bridge_env(bridge_env) -> dict[str, str]:
    """Queues no other bridge consumes, for tests that kill or stop their bridge."""
    suffix = uuid.uuid4().hex[:8]
    return {**bridge_env, "VAMU_METRICS_PORT": str(free_port()),
            "VAMU_BULLMQ_QUEUE": f"vamu-ai-own-{suffix}",
            "VAMU_BULLMQ_SYNC_QUEUE": f"vamu-ai-sync-own-{suffix}",
            "VAMU_QUOTA_JOBS_PER_USER_PER_HOUR": "0"}


def test_a_bridge_killed_mid_batch_loses_no_job_and_duplicates_no_row(
    b: Bridged, own_bridge_env, tmp_path
):
    queue = own_bridge_env["VAMU_BULLMQ_QUEUE"]
    jobs = [{"name": "inspiration.generate",
             "data": {"userId": "u-ada", "requestId": f"kill-{i}-{uuid.uuid4().hex[:6]}"}}
            for i in range(150)]
    refs = [f"request:{job['data']['requestId']}" for job in jobs]
    outcomes: list[dict] = []
    producer = threading.Thread(
        target=lambda: outcomes.extend(produce(b.stack.app_redis_url, queue, jobs,
                                               timeout_ms=90_000)))

    first = BridgeProcess(own_bridge_env, tmp_path / "bridge.log").start()
    producer.start()
    deadline = time.monotonic() + 30
    while len(b.rows_for(refs)) < 10:
        assert time.monotonic() < deadline, "the bridge took no job"
        time.sleep(0.005)
    first.kill()
    accepted_before_kill = len(b.rows_for(refs))
    with BridgeProcess(own_bridge_env, tmp_path / "bridge.log"):
        producer.join(120)

    assert not producer.is_alive()
    assert accepted_before_kill < len(jobs), "the kill came after the batch: nothing tested"
    assert [o["state"] for o in outcomes] == ["completed"] * len(jobs)
    rows = b.rows_for(refs)
    assert len(rows) == len(jobs) == len({r[1] for r in rows})
    assert {o["returnvalue"]["jobId"] for o in outcomes} == {str(r[0]) for r in rows}
    for row_id, _, _ in rows:
        assert wait_for_job(b.stack.store, row_id, timeout=60).status == "succeeded"


def test_sigterm_lets_the_bridge_finish_the_jobs_in_hand_before_it_exits(
    b: Bridged, own_bridge_env, tmp_path
):
    sync_queue = own_bridge_env["VAMU_BULLMQ_SYNC_QUEUE"]
    jobs = [{"name": "inspiration.generate",
             "data": {"userId": "u-chioma", "requestId": f"term-{i}-{uuid.uuid4().hex[:6]}"}}
            for i in range(3)]
    refs = [f"request:{job['data']['requestId']}" for job in jobs]
    outcomes: list[dict] = []
    b.stack.llm.latency = 1.0
    # Generous waits: on a busy machine the held jobs may take seconds, not the point here.
    own_bridge_env = {**own_bridge_env, "VAMU_BRIDGE_SYNC_TIMEOUT_S": "30"}
    bridge = BridgeProcess(own_bridge_env, tmp_path / "bridge.log").start()
    producer = threading.Thread(
        target=lambda: outcomes.extend(produce(b.stack.app_redis_url, sync_queue, jobs,
                                               timeout_ms=60_000, sync=True)))
    producer.start()
    deadline = time.monotonic() + 20
    while len(b.rows_for(refs)) < len(jobs):
        assert time.monotonic() < deadline, "the bridge did not take the jobs"
        time.sleep(0.01)

    exit_code = bridge.terminate()
    producer.join(60)

    assert exit_code == 0
    assert [o["state"] for o in outcomes] == ["completed"] * len(jobs)
    assert all(o["returnvalue"]["status"] == "succeeded" for o in outcomes)
    assert "bridge stopped" in bridge.log_text()


def test_the_bridge_counts_accepted_and_refused_jobs_and_shows_waiting_jobs(b: Bridged,
                                                                           bridge_env):
    port = int(bridge_env["VAMU_METRICS_PORT"])
    before = scrape(port)
    b.produce([{"name": "inspiration.generate", "data": {"userId": "u-ada"}},
               {"name": "nope.nothing", "data": {}}])

    after = scrape(port)

    def delta(outcome: str, reason: str) -> float:
        key = ("vamu_bridge_jobs_total",
               tuple(sorted({"queue": b.queue, "outcome": outcome, "reason": reason}.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("accepted", "") == 1
    assert delta("refused", "unknown_job") == 1
    assert after[("vamu_bullmq_waiting_jobs", (("queue", b.queue),))] == 0
