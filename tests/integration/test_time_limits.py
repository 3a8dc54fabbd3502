"""The soft time limit ends an attempt as `timeout`, on both pools a worker may run.

Celery's threads pool ignores task time limits, so the use cases' checkpoints enforce the soft
one; under prefork Celery raises it inside the task, often in the middle of an SDK call.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import Stack
from tests.support.services import REDIS_BROKER_DB, delete_keys
from tests.support.worker import WorkerProcess, sender_app, wait_for_job
from vamu_tasks.sender import CelerySender
from vamu_tasks.submit import submit_job
from vamu_tasks.testing.fake_llm import FakeLLMServer, Text

pytestmark = pytest.mark.integration


@pytest.fixture
def limited_env(stack: Stack) -> Iterator[dict[str, str]]:
    # A broker prefix of its own: the session's worker must not take these jobs.
    prefix = f"vamu-limits-{uuid.uuid4().hex[:8]}:"
    yield {**stack.env, "VAMU_BROKER_KEY_PREFIX": prefix, "VAMU_TASK_SOFT_TIME_LIMIT_S": "1",
           "VAMU_TASK_TIME_LIMIT_S": "6", "VAMU_LLM_TIMEOUT_S": "10", "VAMU_METRICS_PORT": ""}
    delete_keys(REDIS_BROKER_DB, f"{prefix}*")


def submit(stack: Stack, env: dict[str, str], feature: str, data: dict[str, str]) -> uuid.UUID:
    app = sender_app(env)
    try:
        job, _ = submit_job(stack.store, CelerySender(app), feature, data,  # type: ignore[arg-type]
                            source="cli")
    finally:
        app.close()
    return job.id


def test_a_prefork_attempt_past_the_soft_limit_fails_as_timeout(
    stack: Stack, limited_env: dict[str, str], fake_llm: FakeLLMServer, tmp_path
):
    fake_llm.latency = 3.0  # the limit strikes inside the SDK call
    with WorkerProcess(limited_env, queues="inspiration", log_path=tmp_path / "prefork.log",
                       concurrency=1, name="prefork", extra=("--pool", "prefork")):
        job = wait_for_job(stack.store, submit(stack, limited_env, "inspiration",
                                               {"userId": "u-ada", "count": 1}), timeout=30)

    assert (job.status, job.error_kind) == ("failed", "timeout")
    assert "VAMU_TASK_SOFT_TIME_LIMIT_S" in (job.error_message or "")


def test_a_threads_attempt_past_the_soft_limit_stops_at_a_chunk_as_timeout(
    stack: Stack, limited_env: dict[str, str], fake_llm: FakeLLMServer, tmp_path
):
    # A reply streamed slowly: 40 chunks, 0.1 s apart; the limit is 1 s.
    fake_llm.push(Text("word " * 40, chunk_size=5, chunk_delay=0.1))
    with WorkerProcess(limited_env, queues="chatbot", log_path=tmp_path / "threads.log",
                       concurrency=2, name="threads"):
        job = wait_for_job(stack.store, submit(
            stack, limited_env, "chatbot",
            {"userId": "u-ada", "conversationId": f"c-{uuid.uuid4().hex[:10]}",
             "message": "tell me slowly"}), timeout=30)

    assert (job.status, job.error_kind) == ("failed", "timeout")
    assert "VAMU_TASK_SOFT_TIME_LIMIT_S" in (job.error_message or "")
