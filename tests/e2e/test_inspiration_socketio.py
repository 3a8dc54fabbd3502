"""The app's view: a Socket.IO client in the user's room hears about the job."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Stack
from tests.support.socketio import SocketIOListener
from tests.support.worker import wait_for_job
from vamu_tasks.testing.answers import ideas_responder
from vamu_tasks.testing.fake_llm import Error

pytestmark = pytest.mark.e2e


@pytest.fixture
def s(stack: Stack, fake_llm, fake_api) -> Stack:
    fake_llm.set_responder(ideas_responder)
    return stack


def test_the_users_socketio_client_receives_inspiration_ready_and_no_one_else_does(s: Stack):
    with SocketIOListener(s.app_redis_url, ["u-ada", "u-bruno"], key=s.socketio_key) as room:
        job_id = s.submit({"userId": "u-ada", "count": 1})
        assert wait_for_job(s.store, job_id).status == "succeeded"

        event = room.wait_for("inspiration-ready", user="u-ada")

        assert event["data"] == {"jobId": str(job_id), "feature": "inspiration",
                                 "status": "succeeded"}
        assert [e for e in room.events if e["user"] == "u-bruno"] == []


def test_a_failed_job_reaches_the_users_room_as_ai_job_failed_with_its_kind(s: Stack):
    s.llm.push(Error(400, error_type="invalid_request_error", message="bad model"))
    with SocketIOListener(s.app_redis_url, ["u-chioma"], key=s.socketio_key) as room:
        job_id = s.submit({"userId": "u-chioma", "count": 1})
        assert wait_for_job(s.store, job_id).status == "failed"

        event = room.wait_for("ai-job-failed", user="u-chioma")

        assert event["data"] == {"jobId": str(job_id), "feature": "inspiration",
                                 "errorKind": "provider_error"}


def test_the_event_names_the_request_that_caused_it_so_the_app_need_not_wait_for_the_job_id(
    s: Stack,
):
    request_id = f"req-{uuid.uuid4().hex}"
    with SocketIOListener(s.app_redis_url, ["u-ada"], key=s.socketio_key) as room:
        job_id = s.submit({"userId": "u-ada", "count": 1, "requestId": request_id})

        event = room.wait_for("inspiration-ready", user="u-ada",
                              predicate=lambda e: e["data"].get("requestId") == request_id)

        assert event["data"] == {"jobId": str(job_id), "requestId": request_id,
                                 "feature": "inspiration", "status": "succeeded"}
