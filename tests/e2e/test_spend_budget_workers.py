"""A user's daily spend budget holds across two worker processes running jobs at once."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis

from tests.conftest import Stack
from tests.support.services import REDIS_BROKER_DB, delete_keys, free_port
from tests.support.worker import WorkerProcess, sender_app, wait_for_job
from vamu_tasks.domain import LLMRequest, Message, OutputSchema
from vamu_tasks.llm.spend_budget import worst_case
from vamu_tasks.sender import CelerySender
from vamu_tasks.testing.answers import ideas, ideas_asked
from vamu_tasks.testing.fake_llm import Behaviour, RecordedRequest, Text

pytestmark = pytest.mark.e2e

MODEL = "gpt-5-mini"
MAX_OUTPUT = 2048  # VAMU_LLM_MAX_OUTPUT_TOKENS's default


def expensive_ideas(request: RecordedRequest) -> Behaviour:
    # Each call spends its whole output allowance: its cost is about its worst case.
    count = ideas_asked(request)
    return Text.json(ideas(count), input_tokens=300, output_tokens=MAX_OUTPUT)


@pytest.fixture(scope="module")
def budgeted(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two LLM workers sharing one user budget of five calls' worst case."""
    prefix = f"vamu-test-{uuid.uuid4().hex[:8]}:"
    spend_prefix = f"vamu-test-spend-{uuid.uuid4().hex[:8]}"
    probe = LLMRequest("x" * 1600, (Message("user", "x" * 500),), OutputSchema("s", {}),
                       max_output_tokens=MAX_OUTPUT)
    budget = worst_case(MODEL, probe) * 5
    env = {**stack.env, "VAMU_BROKER_KEY_PREFIX": prefix, "VAMU_LLM_FALLBACK": "",
           "VAMU_BUDGET_USER_USD_PER_DAY": str(budget), "VAMU_BUDGET_KEY_PREFIX": spend_prefix,
           "VAMU_JOB_MAX_RETRIES": "8", "VAMU_LLM_MAX_OUTPUT_TOKENS": str(MAX_OUTPUT)}
    app = sender_app(env)
    logs = tmp_path_factory.mktemp("budget")
    workers = [
        WorkerProcess({**env, "VAMU_METRICS_PORT": str(free_port())}, queues="inspiration",
                      log_path=logs / f"worker-{n}.log", name=f"budget-{n}")
        for n in range(2)
    ]
    with workers[0], workers[1]:
        yield dataclasses.replace(stack, env=env, sender=CelerySender(app), app=app)
    app.close()
    delete_keys(REDIS_BROKER_DB, f"{prefix}*")
    client = redis.Redis.from_url(stack.env["VAMU_REDIS_URL"])
    for key in client.scan_iter(f"{spend_prefix}:*"):
        client.delete(key)
    client.close()


def test_twenty_jobs_of_one_user_spend_no_more_than_the_users_budget(
    budgeted: Stack, fake_llm
):
    fake_llm.set_responder(expensive_ideas)
    user = "u-ada"
    budget = Decimal(budgeted.env["VAMU_BUDGET_USER_USD_PER_DAY"])

    ids = [budgeted.submit({"userId": user, "count": 2}) for _ in range(20)]
    jobs = [wait_for_job(budgeted.store, job_id, timeout=90) for job_id in ids]

    succeeded = [j for j in jobs if j.status == "succeeded"]
    refused = [j for j in jobs if j.status == "failed"]
    spent = sum((j.cost_usd or Decimal(0)) for j in jobs)
    assert spent <= budget
    assert 1 <= len(succeeded) <= 5
    assert {j.error_kind for j in refused} == {"budget_exceeded"}
    # A refused job sent nothing: one LLM request per job that succeeded.
    assert len(fake_llm.requests) == len(succeeded)
    assert all(j.cost_usd is None for j in refused)
    assert "VAMU_BUDGET_USER_USD_PER_DAY" in (refused[0].error_message or "")
    # The budget was not wasted: another job would not have fit.
    one_more = max(j.cost_usd or Decimal(0) for j in succeeded)
    assert spent + one_more > budget
