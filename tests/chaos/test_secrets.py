"""8. Secrets: API keys, the API token and other credentials never appear anywhere we can read.

Every credential the processes hold is a canary: the LLM key, the NestJS API token, the webhook
secret, the PostgreSQL password (in VAMU_DATABASE_URL; the server trusts loopback, so it is sent
but not checked), the Redis password (the test's own redis-server with `requirepass`) and the
Flower password. The bridge, the notify worker, an LLM worker at INFO, another at DEBUG and
Flower run; jobs of every feature go through, some of them failing (unknown user, the LLM
refusing the key with an OpenAI-style masked echo, the NestJS API answering 401).

Searched: every process log; everything sent to Redis (`MONITOR`: Celery messages with their
base64 bodies decoded, BullMQ jobs and return values, Socket.IO packets, chat streams); Flower's
API (workers with their configuration, tasks with args, results and exceptions, task details);
the rows of ai_jobs (results, error messages), notification_outbox, chat_messages and
agent_steps; the webhook bodies and the Socket.IO events the clients got; `vamu-tasks jobs show`.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.conftest import OwnRedis, Proc, Rig, answer, start_all, wait_until
from tests.support.cli import vamu
from tests.support.services import free_port
from vamu_tasks.testing.fake_llm import Behaviour, Error, RecordedRequest

pytestmark = pytest.mark.timeout(300)

SALT = uuid.uuid4().hex[:8]
LLM_KEY = f"sk-canary-llm-{SALT}-9f2c"
API_TOKEN = f"canary-api-token-{SALT}"
WEBHOOK_SECRET = f"whsec-canary-{SALT}"
DB_PASSWORD = f"canary-db-pw-{SALT}"
REDIS_PASSWORD = f"canary-redis-pw-{SALT}"
FLOWER_PASSWORD = f"canary-flower-pw-{SALT}"
CANARIES = {"llm key": LLM_KEY, "api token": API_TOKEN, "webhook secret": WEBHOOK_SECRET,
            "database password": DB_PASSWORD, "redis password": REDIS_PASSWORD,
            "flower password": FLOWER_PASSWORD}


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Any:
    server = OwnRedis(tmp_path / "redis", free_port(), password=REDIS_PASSWORD).start()
    try:
        yield server
    finally:
        server.stop()


def with_password(url: str) -> str:
    return url.replace("postgresql+psycopg://postgres@", f"postgresql+psycopg://postgres:"
                       f"{DB_PASSWORD}@", 1)


def http_get(url: str, password: str) -> str:
    request = urllib.request.Request(url)
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return str(response.read().decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        with exc:
            return f"HTTP {exc.code}: {exc.read().decode(errors='replace')}"


def decoded_monitor(path: Path) -> str:
    """MONITOR output, plus every base64 Celery body in it decoded."""
    raw = path.read_text(errors="replace")
    extra = []
    for match in re.finditer(r'\\"body\\": \\"([A-Za-z0-9+/=]+)\\"', raw):
        try:
            extra.append(base64.b64decode(match.group(1)).decode(errors="replace"))
        except ValueError:
            pass
    return raw + "\n".join(extra)


def found_in(sources: dict[str, str]) -> dict[str, list[str]]:
    return {name: [where for where, text in sources.items() if secret in text]
            for name, secret in CANARIES.items()}


def test_no_credential_appears_in_logs_messages_flower_results_or_errors(
    redis_with_password, make_rig, listener, tmp_path, figures
):
    rig: Rig = make_rig(redis_base=redis_with_password.url, worker_db_url=with_password,
                        llm_key=LLM_KEY, api_token=API_TOKEN, webhook_secret=WEBHOOK_SECRET,
                        VAMU_JOB_MAX_RETRIES="1")
    monitor_path = tmp_path / "monitor.txt"
    with open(monitor_path, "wb") as out:
        monitor = subprocess.Popen(
            ["redis-cli", "-p", str(redis_with_password.port), "--no-auth-warning", "-a",
             REDIS_PASSWORD, "monitor"], stdout=out, stderr=subprocess.STDOUT)
    flower_port = free_port()
    flower = rig._proc("flower", [sys.executable, "-m", "workers.flower"], None, {
        "VAMU_FLOWER_PORT": str(flower_port), "VAMU_FLOWER_PASSWORD": FLOWER_PASSWORD,
        "VAMU_FLOWER_ADDRESS": "127.0.0.1"})
    procs: list[Proc] = [rig.bridge(), rig.notify_worker(),
                         rig.llm_worker("info", concurrency=4),
                         rig.llm_worker("debug", concurrency=4, loglevel="DEBUG"), flower]
    try:
        start_all(*procs)
        base = f"http://127.0.0.1:{flower_port}"
        # Flower sees every task event once the workers' heartbeats have reached it.
        assert wait_until(lambda: all(
            re.search(rf'flower_worker_online{{worker="{name}-[^"]+"}} 1\.0',
                      http_get(f"{base}/metrics", FLOWER_PASSWORD)) for name in ("info", "debug")),
            60, 0.5)
        room = listener(rig)

        refused_key: set[str] = set()

        def responder(request: RecordedRequest) -> Behaviour:
            token = rig.token_of(json.dumps(request.body))
            if token in refused_key:
                # What OpenAI answers to a wrong key: the key, masked but for its end.
                masked = LLM_KEY[:3] + "*" * (len(LLM_KEY) - 7) + LLM_KEY[-4:]
                return Error(401, f"Incorrect API key provided: {masked}. You can find your "
                             "API key at https://platform.openai.com/account/api-keys.")
            return answer(request)

        rig.llm.set_responder(responder)
        users = ["u-ada", "u-bruno", "u-chioma"]
        jobs = [rig.inspiration(user=users[i % 3]) for i in range(6)]
        jobs += [rig.chat(user=users[i % 3]) for i in range(3)]
        jobs += [{"name": "agent.run", "data": {"userId": "u-ada", "goal": "jazz tonight"}}] * 2
        jobs += [rig.inspiration(user="u-nobody")]
        refusing = rig.inspiration(user="u-bruno")
        refused_key.add(rig.token_of(refusing["data"]["hint"]) or "")
        jobs.append(refusing)
        rig.api.fail_next(50, status=401, path_prefix="/internal/users/u-dev")
        jobs.append(rig.inspiration(user="u-dev"))
        outcomes = rig.produce(jobs, timeout_s=60).result()
        counts = rig.wait_jobs_end(len(jobs), timeout=90)
        wait_until(lambda: rig.query("SELECT count(*) FROM notification_outbox "
                                     "WHERE delivered_at IS NULL")[0][0] == 0, 30)
        time.sleep(2)  # Flower's last task events

        job_ids = [o["returnvalue"]["jobId"] for o in outcomes if o["state"] == "completed"]
        flower_pages = [f"{base}/api/workers?refresh=1", f"{base}/api/tasks",
                        f"{base}/dashboard?json=1", f"{base}/metrics"]
        flower_pages += [f"{base}/api/task/info/{job_id}" for job_id in job_ids]
        flower_text = "\n".join(http_get(url, FLOWER_PASSWORD) for url in flower_pages)
        tables = {table: "\n".join(r[0] for r in rig.query(
            f"SELECT row_to_json(t)::text FROM {table} t"))
            for table in ("ai_jobs", "notification_outbox", "chat_messages", "agent_steps",
                          "chat_conversations")}
        shows = "\n".join(vamu(rig.env, "jobs", "show", job_id).stdout for job_id in job_ids[:4])
        failed = rig.query("SELECT error_kind, error_message FROM ai_jobs "
                           "WHERE status = 'failed'")
    finally:
        monitor.terminate()
        monitor.wait(10)
    sources = {
        **{f"log:{p.name}": p.log_text() for p in procs},
        "redis MONITOR (decoded)": decoded_monitor(monitor_path),
        "flower api": flower_text,
        **{f"table:{k}": v for k, v in tables.items()},
        "webhook bodies": json.dumps(rig.webhook.deliveries),
        "socket.io events": json.dumps(room.events),
        "vamu-tasks jobs show": shows,
    }
    found = found_in(sources)
    figures.update({
        "jobs": len(jobs), **{f"status_{k}": v for k, v in sorted(counts.items())},
        "failed_jobs": sorted({(k, (m or "")[:90]) for k, m in failed}),
        "searched_bytes": {k: len(v) for k, v in sources.items()},
        "monitor_celery_bodies_decoded": len(re.findall(
            r'\\"body\\": \\"', monitor_path.read_text(errors="replace"))),
        "canaries_found": {k: v for k, v in found.items() if v},
    })
    assert (counts["succeeded"], counts["failed"]) == (11, 3), counts
    assert len(flower_text) > 1000 and "vamu.inspiration.generate" in flower_text
    assert "LPUSH" in sources["redis MONITOR (decoded)"]
    assert not figures["canaries_found"], figures["canaries_found"]
