"""Prometheus metrics read from a real worker's /metrics after real jobs."""

from __future__ import annotations

import pytest

from tests.conftest import Stack
from tests.support.services import scrape
from tests.support.worker import wait_for_job
from vamu_tasks.testing.answers import ideas_responder
from vamu_tasks.testing.fake_llm import Error

pytestmark = pytest.mark.integration


@pytest.fixture
def s(stack: Stack, fake_llm, fake_api) -> Stack:
    fake_llm.set_responder(ideas_responder)
    return stack


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_worker_metrics_count_outcomes_tokens_cost_latency_429s_retries_and_fallbacks(s: Stack):
    port = int(s.env["VAMU_METRICS_PORT"])
    before = scrape(port)
    ok = s.submit({"userId": "u-ada", "count": 1})
    s.llm.push(Error(429, retry_after=0.2))
    limited = s.submit({"userId": "u-bruno", "count": 1})
    for job_id in (ok, limited):
        wait_for_job(s.store, job_id)
    s.llm.push(Error(500), Error(500), Error(500))
    fell_back = wait_for_job(s.store, s.submit({"userId": "u-chioma", "count": 1}))
    missing = wait_for_job(s.store, s.submit({"userId": "u-ghost", "count": 1}))
    for job_id in (ok, limited, fell_back.id, missing.id):
        s.webhook.wait_for(lambda d, job_id=job_id: d["data"].get("jobId") == str(job_id))

    after = scrape(port)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert fell_back.provider == "anthropic" and missing.error_kind == "user_not_found"
    assert grew("vamu_jobs_finished_total", feature="inspiration", status="succeeded",
                error_kind="") == 3
    assert grew("vamu_jobs_finished_total", feature="inspiration", status="failed",
                error_kind="user_not_found") == 1
    assert grew("vamu_llm_errors_total", provider="openai", error_kind="rate_limited") == 1
    assert grew("vamu_llm_errors_total", provider="openai", error_kind="provider_error") == 3
    assert grew("vamu_job_retries_total", feature="inspiration", error_kind="rate_limited") == 1
    assert grew("vamu_llm_fallbacks_total", feature="inspiration", from_provider="openai",
                to_provider="anthropic") == 1
    assert grew("vamu_llm_tokens_total", provider="openai", model="gpt-5-mini",
                kind="input") == 2 * 400
    assert grew("vamu_llm_cost_usd_total", provider="openai", model="gpt-5-mini") > 0
    assert grew("vamu_llm_request_seconds_count", provider="openai", model="gpt-5-mini",
                call="complete") == 2
    assert grew("vamu_notifications_total", transport="webhook", outcome="delivered") >= 4
    assert ("vamu_celery_queue_depth", (("queue", "inspiration"),)) in after


@pytest.mark.parametrize("process", ["workers.notify", "workers.llm", "workers.bridge"])
def test_a_process_whose_metrics_port_is_taken_stops_at_start_with_one_line(
    stack: Stack, tmp_path, process: str
):
    import os
    import socket
    import subprocess
    import sys

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = {**os.environ, **stack.env, "VAMU_METRICS_PORT": str(port),
           "VAMU_METRICS_ADDRESS": "127.0.0.1"}
    try:
        done = subprocess.run([sys.executable, "-m", process], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    finally:
        taken.close()

    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("vamu-tasks: ")]
    assert lines == [
        f"vamu-tasks: cannot serve metrics on 127.0.0.1:{port} (Address already in use); "
        "give each process its own free VAMU_METRICS_PORT, or unset it"
    ], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("process", ["workers.llm", "workers.notify", "workers.bridge"])
def test_each_process_logs_the_address_of_its_metrics(app_redis_url: str, tmp_path, process: str):
    import os
    import subprocess
    import sys
    import time
    import uuid

    from tests.support.services import free_port

    port = free_port()
    # The embedded broker and SQLite in tmp_path: nothing here may take the other tests' tasks.
    env = {key: value for key, value in os.environ.items() if not key.startswith("VAMU_")}
    env.update({"VAMU_DATA_DIR": str(tmp_path), "VAMU_METRICS_PORT": str(port),
                "VAMU_REDIS_URL": app_redis_url,
                "VAMU_BULLMQ_PREFIX": f"metrics-log-{uuid.uuid4().hex[:8]}",
                "VAMU_LLM_PROVIDER": "offline"})
    expected = f"metrics on http://127.0.0.1:{port}/metrics"
    log_path = tmp_path / "process.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen([sys.executable, "-m", process], env=env, cwd=tmp_path,
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 40
            while expected not in log_path.read_text(errors="replace"):
                assert child.poll() is None, log_path.read_text(errors="replace")[-2000:]
                assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-2000:]
                time.sleep(0.2)
        finally:
            child.terminate()
            child.wait(30)

    assert log_path.read_text(errors="replace").count(expected) == 1
