"""NestJS → BullMQ → bridge → Celery, with the real Node `bullmq` producer on the NestJS side."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from tests.conftest import Stack
from tests.support.bullmq import BridgeProcess, produce
from tests.support.llm_answers import ideas_responder
from tests.support.socketio import SocketIOListener
from tests.support.worker import wait_for_job

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
                       **kw)

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
        "VAMU_BRIDGE_SYNC_TIMEOUT_S": str(SYNC_TIMEOUT_S),
        # Short locks so a killed bridge's jobs come back within seconds in the tests.
        "VAMU_BRIDGE_LOCK_DURATION_MS": "2000",
        "VAMU_BRIDGE_STALLED_INTERVAL_MS": "1000",
    }


@pytest.fixture(scope="module")
def running_bridge(bridge_env, tmp_path_factory) -> Iterator[BridgeProcess]:
    log_path = tmp_path_factory.mktemp("bridge") / "bridge.log"
    with BridgeProcess(bridge_env, log_path) as bridge:
        yield bridge


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
        assert job.source_ref == f"bullmq:{b.queue}:{outcome['id']}"
        assert len(job.result["ideas"]) == 2
        event = room.wait_for("inspiration-ready", user="u-ada")
        assert event["data"]["jobId"] == str(job_id)
