"""The Node package `@vamu/ai-jobs` (clients/node) against what a real run delivers.

Every job goes through the package's producer (tests/e2e/node/producer.js) to a real bridge and
worker. The run's payloads (Socket.IO events, signed webhook deliveries, BullMQ job data and
return values, the sync results, the failedReasons, the job rows) are written to a JSON file,
then `clients/node/scripts/check-captured.mjs` checks them against the package: at compile time
(`tsc` on a generated .ts file of `<payload> satisfies <exported type>`) and at run time
(`node --test`: each payload against its JSON Schema, verifyWebhook on the raw deliveries,
parseFailedReason on the reasons, replayChunks on the real chat stream).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from tests.conftest import WEBHOOK_SECRET, Stack
from tests.support.bullmq import BridgeProcess, produce
from tests.support.node import (
    CLIENT_DIR,
    NodeHarnessMissing,
    require_node_client,
    require_node_modules,
)
from tests.support.services import REDIS_APP_DB, delete_keys, free_port
from tests.support.socketio import SocketIOListener
from tests.support.worker import wait_for_job
from vamu_tasks.testing.answers import ideas_responder
from vamu_tasks.testing.fake_llm import DropStream, Text, ToolCall

pytestmark = pytest.mark.e2e

SYNC_TIMEOUT_S = 2
JAZZ = "evt-ldn-winter-jazz"
EVENTS = {"inspiration-ready", "ai-job-failed", "chat-chunk", "chat-restart", "chat-reply-ready",
          "agent-step", "agent-finished"}


@pytest.fixture(scope="module")
def bridge_env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    env = {
        **stack.env,
        "VAMU_BULLMQ_QUEUE": f"vamu-ai-node-{suffix}",
        "VAMU_BULLMQ_SYNC_QUEUE": f"vamu-ai-sync-node-{suffix}",
        "VAMU_QUOTA_KEY_PREFIX": f"vamu:quota:{suffix}",
        "VAMU_BRIDGE_SYNC_TIMEOUT_S": str(SYNC_TIMEOUT_S),
        "VAMU_METRICS_PORT": str(free_port()),
    }
    with BridgeProcess(env, tmp_path_factory.mktemp("bridge") / "bridge.log"):
        yield env
    delete_keys(REDIS_APP_DB, f"bull:*{suffix}*", f"vamu:quota:{suffix}:*")


def rows(stack: Stack, job_ids: list[str]) -> list[dict[str, Any]]:
    """The rows as PostgreSQL serialises them, `cost_usd` as text (as node-postgres reads it)."""
    engine = sa.create_engine(stack.env["VAMU_DATABASE_URL"])
    with engine.connect() as conn:
        found = conn.execute(sa.text(
            "SELECT to_jsonb(j) || jsonb_build_object('cost_usd', j.cost_usd::text) "
            "FROM ai_jobs j WHERE j.id = ANY(CAST(:ids AS uuid[])) ORDER BY j.created_at"),
            {"ids": job_ids}).scalars().all()
    engine.dispose()
    return [dict(row) for row in found]


def stored_jobs(stack: Stack, bridge_env: dict[str, str],
                outcomes: list[tuple[str, bool, dict]]) -> list[dict[str, Any]]:
    """What BullMQ holds of each job that got a row: its data as the package sent it, the
    bridge's return value, and what the `*Now` method resolved with."""
    app_redis = redis.Redis.from_url(stack.app_redis_url, decode_responses=True)
    found: list[dict[str, Any]] = []
    for _, sync, o in outcomes:
        if o["state"] == "failed" and "jobId" not in o["error"]:
            continue  # refused: its data is what the types exist to prevent
        queue = bridge_env["VAMU_BULLMQ_SYNC_QUEUE" if sync else "VAMU_BULLMQ_QUEUE"]
        stored = app_redis.hgetall(f"bull:{queue}:{o['id']}")
        entry: dict[str, Any] = {"name": stored["name"], "sync": sync,
                                 "data": json.loads(stored["data"])}
        if o["state"] == "completed":
            entry["returnvalue"] = json.loads(stored["returnvalue"])
            if sync:
                entry["nowResult"] = o["returnvalue"]
        found.append(entry)
    app_redis.close()
    return found


def test_the_node_package_types_every_payload_a_real_run_delivers(
    stack: Stack, bridge_env: dict[str, str], fake_llm, fake_api, tmp_path: Path
):
    require_node_modules()
    require_node_client()
    checker = CLIENT_DIR / "build" / "test" / "captured.test.js"
    if not checker.is_file():
        raise NodeHarnessMissing(f"{checker} is missing: run `make node-client`")
    queue, sync_queue = bridge_env["VAMU_BULLMQ_QUEUE"], bridge_env["VAMU_BULLMQ_SYNC_QUEUE"]

    def run(jobs: list[dict], *, sync: bool = False) -> list[dict]:
        return produce(stack.app_redis_url, sync_queue if sync else queue, jobs, sync=sync)

    def job(name: str, **data: Any) -> dict[str, Any]:
        return {"name": name, "data": data}

    def settle(outcomes: list[dict]) -> list[dict]:
        """Wait for the accepted jobs to end, so the next job gets the next scripted answer."""
        for o in outcomes:
            if o["state"] == "completed":
                wait_for_job(stack.store, uuid.UUID(o["returnvalue"]["jobId"]))
        return outcomes

    fake_llm.set_responder(ideas_responder)
    outcomes: list[tuple[str, bool, dict]] = []  # (job name, sync, outcome)
    with SocketIOListener(stack.app_redis_url, ["u-ada", "u-bruno", "u-ghost"],
                          key=stack.socketio_key) as room:
        async_jobs = [
            job("inspiration.generate", userId="u-ada", count=2),
            job("inspiration.generate", userId="u-ada", count="3"),  # refused: invalid_job
            job("inspiration.imagine", userId="u-ada"),  # refused: unknown_job
        ]
        outcomes += [(j["name"], False, o) for j, o in zip(async_jobs, settle(run(async_jobs)),
                                                            strict=True)]

        fake_llm.push(DropStream("a partial reply that breaks", after_chunks=2),
                      Text("the complete answer", chunk_size=4))
        (chat,) = settle(run([job("chatbot.reply", userId="u-ada",
                                  conversationId=f"c-{uuid.uuid4()}",
                                  message="Any jazz this week?")]))
        outcomes.append(("chatbot.reply", False, chat))

        fake_llm.push(
            ToolCall("search_events", {"q": "jazz", "limit": 2}),
            ToolCall("propose_rsvp", {"eventId": JAZZ, "note": "two seats"}),
            ToolCall("propose_create_event", {"title": "Jazz at mine",
                                              "startsAt": "2026-12-12T20:00:00Z",
                                              "venue": "Home"}),
            ToolCall("propose_message", {"toUserId": "u-bruno", "text": "Jazz on Friday?"}),
            Text("Winter Jazz Standards on Friday; I proposed an RSVP, an event and a message."),
        )
        (agent,) = settle(run([job("agent.run", userId="u-ada", goal="jazz this weekend")]))
        outcomes.append(("agent.run", False, agent))

        fake_llm.push(Text("a quick reply", chunk_size=4))
        sync_jobs = [job("chatbot.reply", userId="u-bruno", conversationId=f"c-{uuid.uuid4()}",
                         message="Quick one?")]
        outcomes += [("chatbot.reply", True, o) for o in run(sync_jobs, sync=True)]
        fake_llm.push(Text("Nothing to do for that goal."))
        outcomes += [("agent.run", True, o)
                     for o in run([job("agent.run", userId="u-bruno", goal="hello")], sync=True)]
        sync_jobs = [job("inspiration.generate", userId="u-bruno", count=1),
                     job("inspiration.generate", userId="u-ghost")]  # fails: user_not_found
        outcomes += [("inspiration.generate", True, o) for o in run(sync_jobs, sync=True)]
        stack.llm.latency = SYNC_TIMEOUT_S + 0.5
        try:
            (late,) = run([job("inspiration.generate", userId="u-ada", count=1)], sync=True)
        finally:
            stack.llm.latency = 0.0
        outcomes.append(("inspiration.generate", True, late))

        states = [(name, sync, o["state"], (o.get("error") or {}).get("kind"))
                  for name, sync, o in outcomes]
        assert states == [
            ("inspiration.generate", False, "completed", None),
            ("inspiration.generate", False, "failed", "invalid_job"),
            ("inspiration.imagine", False, "failed", "unknown_job"),
            ("chatbot.reply", False, "completed", None),
            ("agent.run", False, "completed", None),
            ("chatbot.reply", True, "completed", None),
            ("agent.run", True, "completed", None),
            ("inspiration.generate", True, "completed", None),
            ("inspiration.generate", True, "failed", "user_not_found"),
            ("inspiration.generate", True, "failed", "sync_timeout"),
        ], outcomes
        job_ids = [o["returnvalue"]["jobId"] if o["state"] == "completed" else o["error"]["jobId"]
                   for _, _, o in outcomes if o["state"] == "completed" or "jobId" in o["error"]]
        assert len(job_ids) == 8
        for job_id in job_ids:
            wait_for_job(stack.store, uuid.UUID(job_id))
        room.wait_for("agent-finished", predicate=lambda e: e["data"]["jobId"] == job_ids[2])
        room.wait_for("ai-job-failed", user="u-ghost")
        for job_id in job_ids:  # the webhook gets every event but the chat chunks
            stack.webhook.wait_for(lambda d, j=job_id: d["data"]["jobId"] == j
                                   and d["event"] in {"inspiration-ready", "chat-reply-ready",
                                                      "agent-finished", "ai-job-failed"})
        events = [{"event": e["event"], "data": e["data"]} for e in room.events
                  if e["data"].get("jobId") in job_ids]
    assert {e["event"] for e in events} == EVENTS

    bullmq = stored_jobs(stack, bridge_env, outcomes)
    failed = [{"reason": o["failedReason"], "kind": o["error"]["kind"],
               "jobId": o["error"].get("jobId")} for _, _, o in outcomes if o["state"] == "failed"]
    for reason in failed:  # the reason names the row exactly when there is one
        assert (reason["jobId"] is not None) == (reason["kind"] in {"user_not_found",
                                                                    "sync_timeout"}), reason
    webhooks = [{"body": body.decode(), "signature": signature}
                for body, signature in stack.webhook.raw_deliveries
                if json.loads(body)["data"].get("jobId") in job_ids]
    captured = {
        "redisUrl": stack.app_redis_url,
        "webhookSecret": WEBHOOK_SECRET,
        "events": events,
        "webhooks": webhooks,
        "bullmq": bullmq,
        "failedReasons": failed,
        "rows": rows(stack, job_ids),
        "chats": [{"jobId": chat["returnvalue"]["jobId"], "reply": "the complete answer"}],
    }
    path = tmp_path / "captured.json"
    path.write_text(json.dumps(captured, indent=2, ensure_ascii=False), encoding="utf-8")

    done = subprocess.run(
        [str(require_node_modules()), "scripts/check-captured.mjs", str(path)],
        cwd=CLIENT_DIR, capture_output=True, text=True, timeout=180,
    )

    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
