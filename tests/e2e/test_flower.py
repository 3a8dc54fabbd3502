"""Flower against a real worker: every feature's tasks, ids only, a login on all but /healthcheck.

Both ways of starting Flower are checked, each from an empty working directory:
`python -m workers.flower` (the supported entry point) and `celery -A vamu_tasks flower` with the
repository's flowerconfig.py passed as `--conf`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_TOKEN, LLM_KEY, WEBHOOK_SECRET, Stack
from tests.support.worker import wait_for_job
from vamu_tasks.settings import Settings
from vamu_tasks.testing.answers import ideas_responder
from vamu_tasks.testing.fake_api import FakeNestApi
from vamu_tasks.testing.fake_llm import FakeLLMServer, Text, ToolCall
from workers.flower import LOOPBACK, NO_PASSWORD, flower_argv, flower_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
USER = "admin"  # Settings.flower_user's default
PASSWORD = "flower-test-password-3d9a61"

# What users and the model wrote: none of it may reach Flower.
CANARY_HINT = "canary-hint-b41f: the flat at 7 Quiet Lane"
CANARY_GHOST_HINT = "canary-hint-0c2e from a user who does not exist"
CANARY_MESSAGE = "canary-chat-5e8d: call me on 555-0199"
CANARY_REPLY = "canary-reply-91aa: sure, here is a plan"
CANARY_GOAL = "canary-goal-a7c3: find jazz near my office"
CANARY_ANSWER = "canary-answer-6f02: Winter Jazz on Friday"
CANARIES = [CANARY_HINT, CANARY_GHOST_HINT, CANARY_MESSAGE, CANARY_REPLY, CANARY_GOAL,
            CANARY_ANSWER]
SECRETS = [API_TOKEN, LLM_KEY, WEBHOOK_SECRET, PASSWORD]

ENTRY_POINTS = {
    "workers.flower": [sys.executable, "-m", "workers.flower"],
    "celery flower": [sys.executable, "-m", "celery", "-A", "vamu_tasks", "flower",
                      f"--conf={REPO / 'flowerconfig.py'}"],
}
# No proxy from the environment between the tests and Flower on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Reply:
    status: int
    body: str
    headers: Message  # case-insensitive `get`


def http_get(url: str, auth: tuple[str, str] | None = None, timeout: float = 10.0) -> Reply:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return Reply(response.status, response.read().decode(), response.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, exc.read().decode(errors="replace"), exc.headers)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def flower_env(stack: Stack, port: int, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAMU_FLOWER_", "FLOWER_"))}
    env |= stack.env | {"VAMU_FLOWER_PORT": str(port), "VAMU_FLOWER_PASSWORD": PASSWORD}
    env |= overrides
    return {k: v for k, v in env.items() if v}


class FlowerProcess:
    """One Flower subprocess, stopped by its PID."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, port: int) -> None:
        self.argv, self.env, self.cwd, self.port = argv, env, cwd, port
        self.log_path = cwd.parent / f"{cwd.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def get(self, path: str, auth: tuple[str, str] | None = (USER, PASSWORD)) -> Reply:
        return http_get(self.url(path), auth)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 40.0) -> FlowerProcess:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"flower exited early:\n{self.log_text()[-3000:]}")
            try:
                if self.get("/healthcheck", auth=None).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"flower not up after {timeout}s:\n{self.log_text()[-3000:]}")

    def wait_for_worker_events(self, timeout: float = 30.0) -> None:
        """Until a worker's heartbeat has reached Flower: from then on it sees every task event."""
        online = re.compile(r'^flower_worker_online\{worker="test-[^"]+"\} 1\.0$', re.M)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if online.search(self.get("/metrics").body):
                return
            time.sleep(0.3)
        raise AssertionError(f"no worker online in Flower after {timeout}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def empty_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    path = tmp_path_factory.mktemp(name)
    assert not any(path.iterdir())
    return path


@pytest.fixture(scope="module")
def flowers(stack: Stack, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, FlowerProcess]]:
    started: dict[str, FlowerProcess] = {}
    try:
        for name, argv in ENTRY_POINTS.items():
            port = free_port()
            cwd = empty_dir(tmp_path_factory, "flower")
            started[name] = FlowerProcess(argv, flower_env(stack, port), cwd, port).start()
        for flower in started.values():
            flower.wait_for_worker_events()
        yield started
    finally:
        for flower in started.values():
            flower.stop()


@dataclass
class Jobs:
    inspiration: uuid.UUID
    ghost: uuid.UUID  # an inspiration job for an unknown user: fails as user_not_found
    chatbot: uuid.UUID
    agent: uuid.UUID

    def expected(self) -> dict[str, tuple[str, str]]:
        """Task id (the job id) -> (task name, feature)."""
        return {
            str(self.inspiration): ("vamu.inspiration.generate", "inspiration"),
            str(self.ghost): ("vamu.inspiration.generate", "inspiration"),
            str(self.chatbot): ("vamu.chatbot.reply", "chatbot"),
            str(self.agent): ("vamu.agent.run", "agent"),
        }


@pytest.fixture(scope="module")
def jobs(stack: Stack, flowers: dict[str, FlowerProcess], fake_llm_server: FakeLLMServer,
         fake_api_server: FakeNestApi) -> Iterator[Jobs]:
    """One job of each feature, run one after the other while both Flowers watch."""
    fake_llm_server.reset()
    fake_llm_server.latency = 0.0
    fake_api_server.reset()
    try:
        fake_llm_server.set_responder(ideas_responder)
        inspiration = stack.submit({"userId": "u-ada", "count": 1, "hint": CANARY_HINT})
        ghost = stack.submit({"userId": "u-ghost", "count": 1, "hint": CANARY_GHOST_HINT})
        done = [wait_for_job(stack.store, inspiration), wait_for_job(stack.store, ghost)]
        fake_llm_server.set_responder(None)

        fake_llm_server.push(Text(CANARY_REPLY))
        chatbot = stack.submit({"userId": "u-ada", "conversationId": f"c-{uuid.uuid4().hex[:10]}",
                                "message": CANARY_MESSAGE}, feature="chatbot")
        done.append(wait_for_job(stack.store, chatbot))

        fake_llm_server.push(ToolCall("search_events", {"q": "jazz", "limit": 3}),
                             Text(CANARY_ANSWER))
        agent = stack.submit({"userId": "u-ada", "goal": CANARY_GOAL}, feature="agent")
        done.append(wait_for_job(stack.store, agent))
    finally:
        fake_llm_server.reset()
        fake_api_server.reset()
    assert [(job.status, job.error_kind) for job in done] == [
        ("succeeded", None), ("failed", "user_not_found"), ("succeeded", None),
        ("succeeded", None)]
    assert done[2].result is not None and done[2].result["reply"] == CANARY_REPLY
    assert done[3].result is not None and done[3].result["answer"] == CANARY_ANSWER
    yield Jobs(inspiration, ghost, chatbot, agent)


def poll_tasks(flower: FlowerProcess, done: Callable[[dict[str, Any]], bool],
               timeout: float = 30.0) -> dict[str, Any]:
    """Flower's /api/tasks once `done` holds: task events reach it a moment after the fact."""
    deadline = time.monotonic() + timeout
    while True:
        reply = flower.get("/api/tasks")
        assert reply.status == 200, reply
        tasks: dict[str, Any] = json.loads(reply.body)
        if done(tasks) or time.monotonic() > deadline:
            return tasks
        time.sleep(0.3)


def deliveries_of(tasks: dict[str, Any], job_id: str) -> list[dict[str, Any]]:
    return [t for t in tasks.values()
            if t["name"] == "vamu.notify.deliver" and t.get("parent_id") == job_id]


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_tasks_of_every_feature_show_their_state_and_only_the_job_id_and_feature(
    flowers: dict[str, FlowerProcess], jobs: Jobs, entry: str
):
    flower = flowers[entry]
    expected = jobs.expected()

    # Socket.IO and log go out from the job's own worker; the webhook is a
    # `vamu.notify.deliver` task, a child of the job's task (so are the agent's step events).
    def all_done(tasks: dict[str, Any]) -> bool:
        return all(
            tasks.get(task_id, {}).get("state") == "SUCCESS"
            and {d["state"] for d in deliveries_of(tasks, task_id)} == {"SUCCESS"}
            for task_id in expected)

    tasks = poll_tasks(flower, all_done)

    for task_id, (name, feature) in expected.items():
        task = tasks.get(task_id)
        assert task is not None, f"{name} {task_id} not in Flower: {sorted(tasks)}"
        assert (task["name"], task["state"]) == (name, "SUCCESS")
        assert task["args"] == "()"
        assert task["kwargs"] == f"{{'feature': '{feature}', 'job_id': '{task_id}'}}"
        # The Celery result is the job's outcome in ids and states, never its content.
        status = "failed" if task_id == str(jobs.ghost) else "succeeded"
        assert f"'status': '{status}'" in task["result"]
        deliveries = deliveries_of(tasks, task_id)
        assert deliveries and {d["state"] for d in deliveries} == {"SUCCESS"}
        for delivery in deliveries:
            assert delivery["args"] == "()"
            assert re.fullmatch(r"\{'ref': \{'event_id': '[0-9a-f-]{36}'\}\}",
                                delivery["kwargs"]), delivery["kwargs"]
    assert "'error_kind': 'user_not_found'" in tasks[str(jobs.ghost)]["result"]

    # Everything Flower shows about these tasks and the worker, in the API and in the UI.
    pages = [json.dumps(tasks), flower.get("/api/workers").body, flower.get("/metrics").body,
             flower.get("/tasks").body]
    for task_id in expected:
        pages += [flower.get(f"/api/task/info/{task_id}").body, flower.get(f"/task/{task_id}").body]
    shown = "\n".join(pages)
    assert all(str(job_id) in shown for job_id in expected)
    for text in CANARIES:
        assert text not in shown and text.split(":")[0] not in shown, text
    for secret in SECRETS:
        assert secret not in shown, "a secret reached Flower"


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_everything_but_healthcheck_needs_the_login(
    flowers: dict[str, FlowerProcess], entry: str
):
    flower = flowers[entry]
    for path in ["/", "/tasks", "/api/tasks", "/api/workers", "/metrics"]:
        for auth in [None, (USER, "wrong-password"), ("someone", PASSWORD), (USER, "")]:
            reply = flower.get(path, auth=auth)
            assert reply.status == 401, (path, auth, reply.status)
            assert PASSWORD not in reply.body
    unauthenticated = flower.get("/metrics", auth=None)
    assert unauthenticated.headers.get("WWW-Authenticate") == 'Basic realm="flower"'
    assert "flower_" not in unauthenticated.body

    metrics = flower.get("/metrics")
    assert metrics.status == 200
    assert "flower_events_total" in metrics.body
    assert flower.get("/").status == 200
    health = flower.get("/healthcheck", auth=None)
    assert (health.status, health.body) == (200, "OK")


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_without_a_password_flower_refuses_to_start(stack: Stack, tmp_path: Path, entry: str):
    env = flower_env(stack, free_port(), VAMU_FLOWER_PASSWORD="")
    assert "VAMU_FLOWER_PASSWORD" not in env
    done = subprocess.run(ENTRY_POINTS[entry], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)

    assert done.returncode != 0
    assert NO_PASSWORD in done.stderr
    assert "VAMU_FLOWER_PASSWORD" in done.stderr


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a listening TCP socket on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table in ["/proc/net/tcp", "/proc/net/tcp6"]:
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            if len(address) == 8:
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
            else:
                found.add(f"ipv6:{address}")
    return found


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_the_insecure_local_flag_listens_on_loopback_only(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory, entry: str
):
    port = free_port()
    env = flower_env(stack, port, VAMU_FLOWER_PASSWORD="", VAMU_FLOWER_INSECURE_LOCAL="true",
                     VAMU_FLOWER_ADDRESS="0.0.0.0")
    flower = FlowerProcess(ENTRY_POINTS[entry], env, empty_dir(tmp_path_factory, "local"), port)
    try:
        flower.start()
        assert listening_addresses(port) == {LOOPBACK}
        # No login in this mode (that is what the flag is for), so only on this machine.
        assert flower.get("/metrics", auth=None).status == 200
    finally:
        flower.stop()


def test_the_settings_decide_address_and_login_and_the_command_line_cannot_widen_them(
    monkeypatch: pytest.MonkeyPatch,
):
    for name in list(os.environ):
        if name.startswith("VAMU_FLOWER_"):
            monkeypatch.delenv(name)

    def settings(**values: Any) -> Settings:
        return Settings(_env_file=None, **values)

    config = flower_config(settings(flower_password="pw", flower_address="0.0.0.0"))
    assert (config.address, config.basic_auth) == ("0.0.0.0", ("admin:pw",))
    local = flower_config(settings(flower_insecure_local=True, flower_address="0.0.0.0"))
    assert (local.address, local.basic_auth) == (LOOPBACK, ())
    local_with_password = flower_config(settings(flower_insecure_local=True, flower_password="pw"))
    assert (local_with_password.address, local_with_password.basic_auth) == (
        LOOPBACK, ("admin:pw",))
    with pytest.raises(SystemExit, match="VAMU_FLOWER_PASSWORD"):
        flower_config(settings(flower_address="0.0.0.0"))
    with pytest.raises(SystemExit, match="':'"):
        flower_config(settings(flower_user="a:b", flower_password="pw"))
    for widening in ["--address=0.0.0.0", "--basic-auth=x:y", "--conf=other.py"]:
        with pytest.raises(SystemExit, match="VAMU_FLOWER_"):
            flower_argv(local, [widening])
    assert "pw" not in " ".join(flower_argv(config, ["--port=6000"]))
