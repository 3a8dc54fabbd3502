"""One job's trace, from NestJS through the real bridge and worker processes to the Socket.IO
publish, as a collector receives it over OTLP/HTTP (tests/support/otlp.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Stack
from tests.support.bullmq import BridgeProcess
from tests.support.node import NODE_DIR, require_node_client, require_node_modules
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.services import REDIS_APP_DB, REDIS_BROKER_DB, delete_keys
from tests.support.socketio import SocketIOListener
from tests.support.worker import WorkerProcess, wait_for_job
from vamu_tasks.testing.answers import ideas_responder
from vamu_tasks.testing.fake_llm import Error

pytestmark = pytest.mark.e2e

HINT = "hint-canary-7f3a rooftop cinema"  # user text: must never reach a span


@dataclass
class Traced:
    stack: Stack
    otlp: OtlpReceiver
    env: dict[str, str]

    def produce(self, data: dict[str, Any], *, telemetry: bool,
                traceparent: str | None = None) -> dict[str, Any]:
        """Add one `inspiration.generate` job from Node (tests/e2e/node/otel_producer.js)."""
        node = require_node_modules()
        require_node_client()
        spec = {"redis": self.stack.app_redis_url, "queue": self.env["VAMU_BULLMQ_QUEUE"],
                "name": "inspiration.generate", "data": data, "telemetry": telemetry,
                "traceparent": traceparent, "timeoutMs": 20000}
        done = subprocess.run([str(node), str(NODE_DIR / "otel_producer.js")],
                              input=json.dumps(spec), cwd=NODE_DIR, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result


@pytest.fixture(scope="module")
def traced(stack: Stack, tmp_path_factory) -> Iterator[Traced]:
    suffix = uuid.uuid4().hex[:8]
    data_dir = tmp_path_factory.mktemp("traces")
    with OtlpReceiver() as otlp:
        env = {
            **stack.env,
            # Broker keys of their own: only this module's traced worker takes these tasks.
            "VAMU_BROKER_KEY_PREFIX": f"vamu-otel-{suffix}:",
            "VAMU_BULLMQ_QUEUE": f"vamu-ai-otel-{suffix}",
            "VAMU_BULLMQ_SYNC_QUEUE": f"vamu-ai-sync-otel-{suffix}",
            "VAMU_QUOTA_KEY_PREFIX": f"vamu:quota:otel-{suffix}",
            "VAMU_METRICS_PORT": "",  # empty counts as unset: the stack's port is taken
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms between batches, so the test waits less
        }
        worker = WorkerProcess(env, queues="inspiration,chatbot,agent,notify",
                               log_path=data_dir / "worker.log", name="otel")
        with worker, BridgeProcess(env, data_dir / "bridge.log"):
            yield Traced(stack, otlp, env)
    delete_keys(REDIS_BROKER_DB, f"vamu-otel-{suffix}:*")
    delete_keys(REDIS_APP_DB, f"bull:*otel-{suffix}*", f"vamu:quota:otel-{suffix}:*")


@pytest.fixture
def t(traced: Traced, fake_llm, fake_api) -> Traced:
    fake_llm.set_responder(ideas_responder)
    return traced


def by_name(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [(s.service, s.name) for s in spans])
    return found[0]


def has(*names: str) -> Any:
    return lambda spans: set(names) <= {s.name for s in spans}


def job_trace(t: Traced, trace_id: str, job_id: uuid.UUID) -> list[ReceivedSpan]:
    """The trace once it holds the job's way to the Socket.IO publish and the webhook. A task's
    span ends, and is exported, after its children: the webhook's delivery task is waited for
    too, not only the webhook's span (its parent was missing 1 run in CI)."""
    t.otlp.wait_for(lambda spans: has(
        f"process {t.env['VAMU_BULLMQ_QUEUE']}", "run/vamu.inspiration.generate",
        "chat gpt-5-mini", "commit ai_jobs", "notify socketio", "notify webhook",
        "run/vamu.notify.deliver",
    )([s for s in spans if s.trace_id == trace_id]))
    spans = t.otlp.trace(trace_id)
    assert {s.attributes.get("vamu.job.id") for s in spans} >= {str(job_id)}
    return spans


def assert_one_connected_trace(t: Traced, spans: list[ReceivedSpan], parent_id: str) -> None:
    """bridge → Celery publish → task → API, LLM, commit → Socket.IO publish, parent by parent."""
    queue = t.env["VAMU_BULLMQ_QUEUE"]
    bridge = by_name(spans, f"process {queue}")
    assert (bridge.service, bridge.kind, bridge.parent_id) == (
        "vamu-tasks-bridge", "CONSUMER", parent_id)
    assert bridge.attributes["messaging.system"] == "bullmq"
    assert bridge.attributes["messaging.destination.name"] == queue
    publish = by_name(spans, "apply_async/vamu.inspiration.generate")
    assert (publish.service, publish.kind, publish.parent_id) == (
        "vamu-tasks-bridge", "PRODUCER", bridge.span_id)
    task = by_name(spans, "run/vamu.inspiration.generate")
    assert (task.service, task.kind, task.parent_id) == (
        "vamu-tasks-worker", "CONSUMER", publish.span_id)

    api = by_name(spans, "GET /internal/users/{userId}/context")
    llm = by_name(spans, "chat gpt-5-mini")
    commit = by_name(spans, "commit ai_jobs")
    socketio = by_name(spans, "notify socketio")
    for child in (api, llm, commit, socketio):
        assert child.parent_id == task.span_id, child
    assert api.end_ns <= llm.start_ns and llm.end_ns <= commit.start_ns
    assert commit.end_ns <= socketio.start_ns
    assert (commit.attributes["vamu.job.status"], commit.attributes["db.system.name"]) == (
        "succeeded", "postgresql")
    assert socketio.attributes["vamu.notification.event"] == "inspiration-ready"
    # The webhook goes through the notify queue: its delivery task is in the trace too.
    webhook = by_name(spans, "notify webhook")
    deliver = next(s for s in spans if s.span_id == webhook.parent_id)
    assert deliver.name == "run/vamu.notify.deliver"

    assert llm.kind == "CLIENT"
    genai = {k: v for k, v in llm.attributes.items() if k.startswith("gen_ai.")}
    assert {k: genai[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name",
                                  "gen_ai.request.model", "gen_ai.output.type")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-5-mini", "gen_ai.output.type": "json"}
    assert genai["gen_ai.response.model"].startswith("gpt-5-mini")
    assert genai["gen_ai.usage.input_tokens"] > 0 and genai["gen_ai.usage.output_tokens"] > 0
    assert "gen_ai.usage.cache_read.input_tokens" in genai
    assert "gen_ai.usage.cache_creation.input_tokens" in genai
    assert genai["gen_ai.response.finish_reasons"] == ("stop",)
    # No message content without the opt-in, and no user text anywhere in the trace.
    assert not {"gen_ai.input.messages", "gen_ai.output.messages",
                "gen_ai.system_instructions"} & set(genai)
    assert HINT not in json.dumps([s.attributes for s in spans], default=str)


def test_a_job_sent_with_bullmq_otel_is_one_trace_from_the_nestjs_add_to_the_socketio_publish(
    t: Traced,
):
    with SocketIOListener(t.stack.app_redis_url, ["u-ada"], key=t.stack.socketio_key) as room:
        out = t.produce({"userId": "u-ada", "count": 2, "hint": HINT}, telemetry=True)
        job_id = uuid.UUID(out["returnvalue"]["jobId"])
        assert wait_for_job(t.stack.store, job_id).status == "succeeded"
        room.wait_for("inspiration-ready", user="u-ada",
                      predicate=lambda e: e["data"]["jobId"] == str(job_id))

    (add,) = [s for s in out["spans"] if s["name"].startswith("add ")]
    spans = job_trace(t, add["traceId"], job_id)
    assert_one_connected_trace(t, spans, parent_id=add["spanId"])
    # NestJS's API saw the same trace in the request's traceparent.
    sent = [r.headers.get("traceparent", "") for r in t.stack.api.requests
            if r.path.endswith("/u-ada/context")]
    assert any(add["traceId"] in header for header in sent), sent


def test_a_job_with_a_traceparent_in_its_data_continues_that_trace(t: Traced):
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    with SocketIOListener(t.stack.app_redis_url, ["u-bruno"], key=t.stack.socketio_key) as room:
        out = t.produce({"userId": "u-bruno", "count": 1, "hint": HINT}, telemetry=False,
                        traceparent=f"00-{trace_id}-{parent_id}-01")
        job_id = uuid.UUID(out["returnvalue"]["jobId"])
        assert wait_for_job(t.stack.store, job_id).status == "succeeded"
        room.wait_for("inspiration-ready", user="u-bruno",
                      predicate=lambda e: e["data"]["jobId"] == str(job_id))

    assert out["spans"] == []  # the producer made no span: only the data carried the context
    spans = job_trace(t, trace_id, job_id)
    assert_one_connected_trace(t, spans, parent_id=parent_id)


def test_a_retried_job_stays_one_trace_with_the_rate_limited_call_marked_by_its_kind(t: Traced):
    t.stack.llm.push(Error(429, "slow down", retry_after=0.2))
    out = t.produce({"userId": "u-chioma", "count": 1}, telemetry=True)
    job = wait_for_job(t.stack.store, uuid.UUID(out["returnvalue"]["jobId"]))
    assert (job.status, job.attempts) == ("succeeded", 2)

    (add,) = [s for s in out["spans"] if s["name"].startswith("add ")]
    trace_id = add["traceId"]
    # Each attempt's task span ends after its LLM call and its notification: wait for both
    # attempts' task spans too, or the second may not have been exported yet.
    def exported(spans: list[Any]) -> bool:
        names = [s.name for s in spans if s.trace_id == trace_id]
        return (names.count("chat gpt-5-mini") == 2 and "notify socketio" in names
                and names.count("run/vamu.inspiration.generate") == 2)

    t.otlp.wait_for(exported)
    spans = t.otlp.trace(trace_id)
    runs = sorted((s for s in spans if s.name == "run/vamu.inspiration.generate"),
                  key=lambda s: s.start_ns)
    chats = sorted((s for s in spans if s.name == "chat gpt-5-mini"), key=lambda s: s.start_ns)
    assert [c.parent_id for c in chats] == [r.span_id for r in runs]
    assert (chats[0].status, chats[0].attributes["error.type"]) == ("ERROR", "rate_limited")
    assert chats[1].status != "ERROR" and "error.type" not in chats[1].attributes
    # The second attempt hangs off the retry Celery published from the first.
    retry = next(s for s in spans if s.span_id == runs[1].parent_id)
    assert (retry.name, retry.parent_id) == ("apply_async/vamu.inspiration.generate",
                                             runs[0].span_id)


def test_a_process_asked_for_otlp_over_grpc_stops_at_start_saying_what_to_set(tmp_path):
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    done = subprocess.run([sys.executable, "-m", "workers.bridge"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "vamu-tasks: configuration error: OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported: "
        "vamu-tasks sends OTLP over HTTP with protobuf (http/protobuf, the default); point "
        "OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port (4318).")
