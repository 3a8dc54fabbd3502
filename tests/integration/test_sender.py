"""`CelerySender` publishes the message `send_task` would, and a real worker runs it."""

from __future__ import annotations

import base64
import gc
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from tests.conftest import Stack
from tests.support.services import REDIS_BROKER_DB, delete_keys, redis_url
from tests.support.worker import sender_app, wait_for_job
from vamu_tasks.features import FEATURES
from vamu_tasks.sender import CelerySender
from vamu_tasks.submit import submit_job
from vamu_tasks.testing.answers import ideas_responder

pytestmark = pytest.mark.integration

SPEC = FEATURES["inspiration"]
HEADERS = {
    "requestId": "req-sender-test",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"vamu-test-sender-{uuid.uuid4().hex[:8]}:"
    yield prefix
    delete_keys(REDIS_BROKER_DB, f"{prefix}*")


@pytest.fixture
def app(prefix: str) -> Iterator[Celery]:
    app = sender_app(
        {"VAMU_BROKER_URL": redis_url(REDIS_BROKER_DB), "VAMU_BROKER_KEY_PREFIX": prefix}
    )
    yield app
    app.close()


def queued(prefix: str) -> list[dict[str, Any]]:
    """The raw messages in the inspiration queue, oldest first, as the worker will read them."""
    client = redis.Redis.from_url(redis_url(REDIS_BROKER_DB))
    try:
        raw = client.lrange(f"{prefix}{SPEC.queue}", 0, -1)
    finally:
        client.close()
    return [json.loads(m) for m in reversed(raw)]


def send_task_as_before(app: Celery, job_id: uuid.UUID) -> None:
    """The sender's call before it published through `app.amqp` itself."""
    app.send_task(
        SPEC.task_name,
        kwargs={"ref": {"job_id": str(job_id)}},
        task_id=str(job_id),
        queue=SPEC.queue,
        headers=dict(HEADERS),
        argsrepr="()",
        kwargsrepr=f"{{'feature': '{SPEC.feature}', 'job_id': '{job_id}'}}",
        # What send_task sends for a task the sending process has not imported (the bridge's
        # case); a test session may have imported it.
        ignore_result=None,
    )


def test_the_message_is_the_one_send_task_publishes_but_for_its_delivery_tag(
    app: Celery, prefix: str
) -> None:
    job_id = uuid.uuid4()
    CelerySender(app).send(SPEC, job_id, HEADERS)
    send_task_as_before(app, job_id)
    ours, theirs = queued(prefix)
    for message in (ours, theirs):
        del message["properties"]["delivery_tag"]  # a new uuid for every publish
    assert ours == theirs
    headers = ours["headers"]
    assert headers["id"] == headers["root_id"] == str(job_id)
    assert headers["requestId"] == HEADERS["requestId"]
    assert headers["traceparent"] == HEADERS["traceparent"]
    assert headers["argsrepr"] == "()"
    assert headers["kwargsrepr"] == f"{{'feature': 'inspiration', 'job_id': '{job_id}'}}"
    assert ours["properties"]["delivery_info"]["routing_key"] == SPEC.queue


def test_the_provider_and_model_of_a_rerun_are_in_the_tasks_kwargs(
    app: Celery, prefix: str
) -> None:
    job_id = uuid.uuid4()
    CelerySender(app).send(SPEC, job_id, provider="anthropic", model="claude-sonnet-4-6")
    (message,) = queued(prefix)
    body = json.loads(base64.b64decode(message["body"]))
    assert body[1] == {
        "ref": {"job_id": str(job_id), "provider": "anthropic", "model": "claude-sonnet-4-6"}
    }


def test_senders_in_several_threads_each_publish_every_message(app: Celery, prefix: str) -> None:
    sender = CelerySender(app)
    ids = [[uuid.uuid4() for _ in range(25)] for _ in range(4)]

    def send(batch: list[uuid.UUID]) -> None:
        for job_id in batch:
            sender.send(SPEC, job_id, HEADERS)

    threads = [threading.Thread(target=send, args=(batch,)) for batch in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = {m["headers"]["id"] for m in queued(prefix)}
    assert sent == {str(job_id) for batch in ids for job_id in batch}


def test_a_dropped_sender_gives_its_producer_back_to_celerys_pool(app: Celery) -> None:
    pool = app.producer_pool
    sender = CelerySender(app)
    sender.send(SPEC, uuid.uuid4())
    assert len(pool._dirty) == 1  # held between sends
    sender.send(SPEC, uuid.uuid4())
    assert len(pool._dirty) == 1
    del sender
    gc.collect()
    assert len(pool._dirty) == 0


def test_a_real_worker_runs_the_sent_task_with_the_jobs_trace_headers(
    stack: Stack, fake_llm: Any, fake_api: Any
) -> None:
    fake_llm.set_responder(ideas_responder)
    request_id = f"req-{uuid.uuid4().hex}"
    job, task_id = submit_job(
        stack.store,
        stack.sender,
        "inspiration",
        {"userId": "u-ada", "count": 2},
        source="cli",
        headers={"requestId": request_id},
    )
    assert task_id == str(job.id)
    done = wait_for_job(stack.store, job.id)
    assert done.status == "succeeded", done
    # The worker's line for the task carries the requestId it read from the message headers.
    log = stack.worker.wait_for_log(f"[{job.id}] succeeded")
    lines = [line for line in log.splitlines() if str(job.id) in line]
    assert any(f"requestId={request_id}" in line and "succeeded" in line for line in lines), lines
