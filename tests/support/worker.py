"""Real `celery worker` subprocesses for the tests, and a sender app that talks to them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Self

from celery import Celery

from vamu_tasks.celery_config import celery_config
from vamu_tasks.domain import JobRecord
from vamu_tasks.settings import Settings
from vamu_tasks.store.repository import SqlAlchemyJobStore


class WorkerProcess:
    """`python -m celery -A vamu_tasks worker`, stopped by its PID on exit."""

    def __init__(self, env: dict[str, str], *, queues: str, log_path: Path,
                 concurrency: int = 8, name: str = "test", extra: tuple[str, ...] = ()) -> None:
        self.env = {**os.environ, **env}
        self.queues = queues
        self.log_path = log_path
        self.concurrency = concurrency
        self.name = name
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "vamu_tasks", "worker",
             "--pool", "threads", "--concurrency", str(self.concurrency),
             "--queues", self.queues, "--hostname", f"{self.name}-{uuid.uuid4().hex[:6]}@%h",
             "--loglevel", "INFO", "--without-gossip", "--without-mingle", *self.extra],
            # Not the repo root: a developer's .env there must not leak into the tests.
            env=self.env, cwd=self.log_path.parent, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_text()[-3000:]}")
            if " ready." in self.log_text():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log_text()[-3000:]}")

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """The log once it holds `text`: Celery writes a task's `succeeded` line after the task
        returns, so after its job row has ended."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log_text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the worker log:\n{log[-3000:]}")
            time.sleep(0.05)
        return log

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sender_app(env: dict[str, str]) -> Celery:
    """A Celery app that sends exactly as vamu-tasks would with `env` (queues, broker options).

    The test process has no celeryconfig of its own: it builds the same config from settings.
    """
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        broker_url=env["VAMU_BROKER_URL"],
        broker_key_prefix=env.get("VAMU_BROKER_KEY_PREFIX"),
        data_dir=env.get("VAMU_DATA_DIR", ".vamu"),
    )
    app = Celery("vamu-test-sender", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def wait_for_job(store: SqlAlchemyJobStore, job_id: uuid.UUID, timeout: float = 30.0) -> JobRecord:
    deadline = time.monotonic() + timeout
    while True:
        job = store.get_job(job_id)
        assert job is not None, f"job {job_id} vanished"
        if job.is_terminal:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status} after {timeout}s: {job}")
        time.sleep(0.05)
