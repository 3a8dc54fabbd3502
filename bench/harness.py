"""The bench's process management: temporary databases, the processes it starts (stopped by
their PID), their CPU and memory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from vamu_tasks.settings import Settings
from vamu_tasks.testing.fake_api import generated_users

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
PG_ADMIN_URL = os.environ.get(
    "VAMU_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

PY = sys.executable
PYSPY = str(Path(sys.executable).with_name("py-spy"))
NODE_DIR = REPO / "tests" / "e2e" / "node"
REDIS_BASE = os.environ.get("VAMU_BENCH_REDIS", "redis://127.0.0.1:6379")
API_TOKEN = "bench-api-token"
LLM_KEY = "sk-bench-not-a-key"
# The jobs go round robin over this many generated users (the fake API serves them with
# `--users`): at the default quota of 120 jobs per user and hour, a stack may take 600,000 jobs
# before any user is refused; `suite.check_quota_headroom` checks a full run's worst case.
USER_COUNT = 5000
USERS = list(generated_users(USER_COUNT))
DEFAULT_QUOTA_PER_HOUR = Settings.model_fields["quota_jobs_per_user_per_hour"].default
# Baseline (a)'s concurrency (it needs 200 jobs in flight), and the LLM worker's in the tuned
# what-if (the settings the bench ran vamu with before issue 16).
BASELINE_CONCURRENCY = 250
TUNED_SETTINGS = {
    "VAMU_QUOTA_JOBS_PER_USER_PER_HOUR": "0",
    "VAMU_LLM_CONCURRENCY": "250",
    "VAMU_NOTIFY": "socketio",
}
FEATURE_TASKS = {"vamu.inspiration.generate", "vamu.chatbot.reply", "vamu.agent.run"}
SYSTEM_LABELS = {
    "vamu": "vamu-tasks (bridge + Celery threads)",
    "bullmq-python": "(a) plain Python bullmq Worker",
    "celery-defaults": "(b) Celery defaults (prefork 2, prefetch 4)",
}


@contextlib.contextmanager
def temporary_database() -> Iterator[str]:
    """An empty PostgreSQL database for this run, dropped (forcibly) at the end."""
    name = f"vamu_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- processes


class Proc:
    """A process the bench started; `stop()` ends it (and its children) by PID."""

    def __init__(self, name: str, group: str, popen: subprocess.Popen[Any], log_path: Path,
                 profiled: bool = False) -> None:
        self.name = name
        self.group = group  # "sut" (system under test) or "harness" (fakes, driver)
        self.popen = popen
        self.log_path = log_path
        self.profiled = profiled  # popen is py-spy; the Python process is its child

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 60) -> str:
        """The log once it contains `pattern`; an error if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if pattern in text:
                return text
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{text[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_text()[-3000:]}")

    def url(self) -> str:
        """The URL a fake prints as its first JSON line (`{"url": ...}`)."""
        text = self.wait_log('{"url"', timeout=30)
        line = next(line for line in text.splitlines() if line.startswith('{"url"'))
        return str(json.loads(line)["url"])

    def send(self, sig: int = signal.SIGTERM) -> None:
        if not self.alive():
            return
        target = self.pid
        if self.profiled:
            # Stop the profiled process itself; py-spy then writes its output and exits.
            kids = [p for p in self.tree()[1:] if p.ppid() == self.pid]
            target = kids[0].pid if kids else self.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, sig)

    def wait(self, timeout: float = 20.0) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            for p in reversed(self.tree()):
                with contextlib.suppress(psutil.Error):
                    p.kill()
            self.popen.wait(5)

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
        self.send(sig)
        self.wait(timeout)


def stop_all(procs: list[Proc], timeout: float = 20.0,
             sig_for: Callable[[Proc], int] = lambda p: signal.SIGTERM) -> None:
    """Signal every process first, then wait for each (by PID; SIGKILL after `timeout`)."""
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.send(sig_for(proc))
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.wait(max(0.5, deadline - time.monotonic()))


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


class RssSampler:
    """Samples the RSS of the system-under-test processes every 0.25 s; keeps the peaks."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs
        self.peak_by_name: dict[str, int] = {}
        self.peak_total = 0
        self.threads_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = threads = 0
            for proc in self.procs:
                rss = 0
                for p in proc.tree():
                    with contextlib.suppress(psutil.Error):
                        if p.name() == "py-spy":
                            continue
                        rss += p.memory_info().rss
                        threads += p.num_threads()
                self.peak_by_name[proc.name] = max(self.peak_by_name.get(proc.name, 0), rss)
                total += rss
            self.peak_total = max(self.peak_total, total)
            self.threads_peak = max(self.threads_peak, threads)
            self._stop.wait(0.25)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        mb = 1024 * 1024
        return {
            "peak_rss_mb_total": round(self.peak_total / mb, 1),
            "peak_rss_mb": {k: round(v / mb, 1) for k, v in self.peak_by_name.items()},
            "peak_threads": self.threads_peak,
        }
