"""The same jobs on RabbitMQ (quorum queues), the production broker option."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import Stack
from tests.support.services import free_port
from tests.support.worker import WorkerProcess, sender_app, wait_for_job
from vamu_tasks.sender import CelerySender
from vamu_tasks.submit import submit_job
from vamu_tasks.testing.answers import ideas_responder
from vamu_tasks.testing.fake_llm import Error, Text

pytestmark = pytest.mark.integration

RABBITMQCTL = shutil.which("rabbitmqctl")


def rabbitmqctl(*args: str) -> None:
    assert RABBITMQCTL is not None
    subprocess.run([RABBITMQCTL, *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def rabbit(stack: Stack, tmp_path_factory) -> Iterator[dict]:
    if RABBITMQCTL is None:
        pytest.skip("rabbitmqctl is not installed: no local RabbitMQ to test against")
    vhost = f"vamu-test-{uuid.uuid4().hex[:8]}"
    try:
        rabbitmqctl("add_vhost", vhost)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"RabbitMQ is not running here: {exc.stderr.decode()[:200]}")
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        env = {**stack.env, "VAMU_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
               "VAMU_METRICS_PORT": str(free_port())}
        env.pop("VAMU_BROKER_KEY_PREFIX")
        log_path = tmp_path_factory.mktemp("rabbit") / "worker.log"
        app = sender_app(env)
        with WorkerProcess(env, queues="inspiration,chatbot,agent,notify", log_path=log_path,
                           name="rabbit") as worker:
            yield {"env": env, "app": app, "worker": worker}
        app.close()
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def s(stack: Stack, fake_llm, fake_api) -> Stack:
    fake_llm.set_responder(ideas_responder)
    return stack


def submit(s: Stack, rabbit: dict, data: dict, feature: str = "inspiration") -> uuid.UUID:
    job, _ = submit_job(s.store, CelerySender(rabbit["app"]), feature, data, source="cli")
    return job.id


def test_an_inspiration_job_runs_through_rabbitmq_quorum_queues(s: Stack, rabbit: dict):
    job = wait_for_job(s.store, submit(s, rabbit, {"userId": "u-ada", "count": 2}))

    assert job.status == "succeeded" and len(job.result["ideas"]) == 2
    delivery = s.webhook.wait_for(lambda d: d["data"].get("jobId") == str(job.id))
    assert delivery["event"] == "inspiration-ready"
    out = subprocess.run(["rabbitmqctl", "list_queues", "-p", rabbit["env"]["VAMU_BROKER_URL"]
                          .rsplit("/", 1)[1], "name", "type"], capture_output=True, text=True,
                         timeout=60)
    assert "inspiration\tquorum" in out.stdout


def test_a_rate_limited_job_is_retried_with_a_countdown_on_rabbitmq(s: Stack, rabbit: dict):
    s.llm.push(Error(429, retry_after=1.0))

    job = wait_for_job(s.store, submit(s, rabbit, {"userId": "u-bruno", "count": 1}))

    assert (job.status, job.attempts) == ("succeeded", 2)
    first, second = s.llm.requests
    assert second.received_at - first.received_at >= 1.0


def test_a_chat_reply_streams_and_is_stored_on_rabbitmq(s: Stack, rabbit: dict):
    s.llm.push(Text("streamed over rabbit", chunk_size=4))

    job = wait_for_job(s.store, submit(s, rabbit, {"userId": "u-ada", "conversationId":
                                                   f"c-{uuid.uuid4().hex[:8]}",
                                                   "message": "hi"}, "chatbot"))

    assert job.result["reply"] == "streamed over rabbit"


def test_inspect_ping_reaches_the_rabbitmq_worker(rabbit: dict):
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "vamu_tasks", "inspect", "ping", "--timeout", "5"],
        env={**rabbit["env"]}, capture_output=True, text=True, timeout=60,
        cwd=rabbit["worker"].log_path.parent,
    )
    assert out.returncode == 0, out.stderr
    assert "pong" in out.stdout
