"""`vamu-tasks dev` (`make dev`) runs the whole system on PostgreSQL and Redis, and cleans up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import sqlalchemy as sa

from tests.support.bullmq import produce
from tests.support.services import (
    PG_ADMIN_URL,
    REDIS_APP_DB,
    REDIS_BASE_URL,
    REDIS_BROKER_DB,
    delete_keys,
    free_port,
    redis_url,
)
from tests.support.socketio import SocketIOListener
from vamu_tasks.store.repository import SqlAlchemyJobStore

pytestmark = pytest.mark.e2e

READY = "What NestJS must match:"


def free_port_block(size: int) -> int:
    """A base port whose next `size` ports are free now (the dev command uses base+1..base+3)."""
    for _ in range(50):
        base = free_port()
        if base + size > 65535:
            continue
        sockets = []
        try:
            for port in range(base + 1, base + size + 1):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no block of free ports")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class DevCommand:
    """`python -m vamu_tasks.cli dev …` in a directory of its own, its output in a file."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.log = cwd / "dev.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vamu_tasks.cli", "dev", *args],
                env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None:
                raise AssertionError(f"dev exited with {self.process.returncode}:\n"
                                     f"{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} after {timeout}s:\n{self.output()[-4000:]}")
            time.sleep(0.2)


@pytest.fixture
def dev_names() -> Iterator[dict[str, str]]:
    """A database name and Redis key prefixes of this test's own, removed afterwards."""
    tag = f"vamu-test-dev-{uuid.uuid4().hex[:8]}"
    names = {"database": f"vamu_test_dev_{uuid.uuid4().hex[:10]}", "tag": tag}
    yield names
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{names["database"]}" WITH (FORCE)'))
    finally:
        admin.dispose()
    delete_keys(REDIS_BROKER_DB, f"{tag}:*")
    delete_keys(REDIS_APP_DB, f"{tag}*")


def test_dev_creates_the_database_runs_a_bullmq_job_to_a_socketio_event_and_stops_everything(
    tmp_path, dev_names
):
    tag = dev_names["tag"]
    database_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{dev_names['database']}"
    flower_port, metrics_base = free_port(), free_port_block(3)
    env = {
        **os.environ,
        # What the command leaves to the environment: the offline LLM, the sample users, and
        # key prefixes of this test's own in the shared test Redis databases.
        "VAMU_LLM_PROVIDER": "offline",
        "VAMU_API_BASE_URL": "",
        "VAMU_BROKER_KEY_PREFIX": f"{tag}:",
        "VAMU_BULLMQ_PREFIX": f"{tag}-bull",
        "VAMU_SOCKETIO_KEY": tag,
        "VAMU_QUOTA_KEY_PREFIX": f"{tag}:quota",
        "VAMU_LLM_CONCURRENCY": "4",
        "VAMU_NOTIFY_CONCURRENCY": "2",
    }
    args = ["--database-url", database_url, "--redis", REDIS_BASE_URL,
            "--broker-db", str(REDIS_BROKER_DB), "--app-db", str(REDIS_APP_DB),
            "--flower-port", str(flower_port), "--metrics-base", str(metrics_base)]
    dev = DevCommand(args, env, tmp_path)
    started: list[psutil.Process] = []
    try:
        dev.wait_for(READY)
        parent = psutil.Process(dev.process.pid)
        started = parent.children(recursive=True)
        modules = sorted(p.cmdline()[2] for p in parent.children())
        assert modules == ["workers.bridge", "workers.flower", "workers.llm", "workers.notify"]
        out = dev.output()
        assert "database created; migrating" in out
        redis_server = urlsplit(REDIS_BASE_URL)
        assert (f"connection {{ host: '{redis_server.hostname}', port: {redis_server.port}, "
                f"db: {REDIS_APP_DB} }}") in out
        assert f"with key '{tag}'" in out
        assert answers(f"http://127.0.0.1:{flower_port}/healthcheck")
        for offset in (1, 2, 3):  # one metrics port per process
            assert answers(f"http://127.0.0.1:{metrics_base + offset}/metrics"), offset

        app_redis = redis_url(REDIS_APP_DB)
        with SocketIOListener(app_redis, ["u-ada"], key=tag) as room:
            request_id = str(uuid.uuid4())
            (outcome,) = produce(app_redis, "vamu-ai-sync", [
                {"name": "inspiration.generate", "raw": True,
                 "data": {"userId": "u-ada", "count": 2, "requestId": request_id}}],
                prefix=f"{tag}-bull", timeout_ms=60000)
            assert outcome["state"] == "completed", outcome
            result = outcome["returnvalue"]
            assert result["status"] == "succeeded" and len(result["result"]["ideas"]) == 2
            event = room.wait_for("inspiration-ready", user="u-ada", timeout=20)
            assert event["data"]["jobId"] == result["jobId"]

        store = SqlAlchemyJobStore.from_url(database_url)
        try:
            job = store.get_job(uuid.UUID(result["jobId"]))
        finally:
            store.close()
        assert job is not None and job.status == "succeeded" and job.source == "bullmq"

        dev.process.send_signal(signal.SIGTERM)
        assert dev.process.wait(60) == 0, dev.output()[-4000:]
        assert "vamu-tasks dev: all processes stopped" in dev.output()
        left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left == []
    finally:
        if dev.process.poll() is None:
            dev.process.kill()
            dev.process.wait()
        for process in started:  # only what this dev command started
            if process.is_running():
                process.kill()
