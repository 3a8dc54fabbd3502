"""The chaos suite's harness: each test starts its own processes, injects one fault, counts.

Every test gets a `Rig`: its own PostgreSQL database (migrated), its own broker key prefix, BullMQ
queue names and Socket.IO key on the machine's Redis (or on a Redis of its own), its own fake LLM
(0.2 s per answer), fake NestJS API and webhook receiver, and the processes it asks for: the
bridge (`python -m workers.bridge`), the notify worker with housekeeping (`python -m
workers.notify`: the reaper every 2 s and the outbox sweep, run by whichever notify worker holds
the housekeeping lease) and LLM workers (`python -m celery -A vamu_tasks worker`,
threads or prefork). Jobs go in through the bridge from the Node producer
(`tests/chaos/node/producer.js`). The counts come from PostgreSQL, BullMQ (the producer's view),
the Socket.IO client, the webhook receiver and the fake LLM's request log.

The suite runs only when named on the command line (`pytest tests/chaos`, `make chaos`), not as
part of `pytest` over the whole tree. Each test records its figures with `figures`; they are
printed at the end under "chaos figures" (docs/reliability.md quotes them).
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
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
import sqlalchemy as sa

from tests.support.node import NODE_DIR, require_node_modules
from tests.support.services import REDIS_BASE_URL, temporary_database
from tests.support.socketio import SocketIOListener
from tests.support.webhook import WebhookReceiver
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.testing.answers import ideas_responder, requested_schema
from vamu_tasks.testing.fake_api import FakeNestApi
from vamu_tasks.testing.fake_llm import Behaviour, FakeLLMServer, RecordedRequest, Text

CHAOS_DIR = Path(__file__).resolve().parent
PRODUCER = CHAOS_DIR / "node" / "producer.js"
HOST = socket.gethostname()
USERS = ["u-ada", "u-bruno", "u-chioma", "u-dev"]

# Canary-looking but fake; test_secrets uses its own.
LLM_KEY = "sk-chaos-llm-key-0f3a"
API_TOKEN = "chaos-api-token-77c1"
WEBHOOK_SECRET = "whsec-chaos-5e2b"

LLM_LATENCY_S = 0.2


# --- collection: only when asked for ---------------------------------------------------------


def _chaos_selected(config: pytest.Config) -> bool:
    if os.environ.get("VAMU_CHAOS") == "1":
        return True
    base = Path(config.invocation_params.dir)
    for arg in config.invocation_params.args:
        if arg.startswith("-"):
            continue
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == CHAOS_DIR or CHAOS_DIR in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`pytest` over the whole tree skips the chaos suite; `pytest tests/chaos` runs it."""
    if CHAOS_DIR in collection_path.parents and not _chaos_selected(config):
        return True
    return None


# --- figures ---------------------------------------------------------------------------------

_FIGURES: dict[str, dict[str, Any]] = {}


def record(name: str) -> dict[str, Any]:
    """A dict to fill with what a scenario measured; printed at the end of the run."""
    out: dict[str, Any] = {}
    _FIGURES[name] = out
    return out


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    return record(request.node.name)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("chaos figures")
    for name, values in _FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(values, sort_keys=True, default=str)}")
    path = os.environ.get("VAMU_CHAOS_REPORT")
    if path:
        Path(path).write_text(json.dumps(_FIGURES, indent=2, sort_keys=True, default=str))


# --- processes -------------------------------------------------------------------------------


class Proc:
    """One process of the system under test, with its log; stopped or killed by its PID."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path,
                 ready: str | None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.ready = ready
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def launch(self) -> int:
        """Start it; returns the log offset its readiness line must appear after."""
        offset = len(self.log_text())
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {self.starts} at {time.time():.3f}\n".encode())
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.log_path.parent, stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        return offset

    def wait_ready(self, offset: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.ready is not None and self.ready not in self.log_text()[offset:]:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)

    def start(self, timeout: float = 60.0) -> Proc:
        self.wait_ready(self.launch(), timeout)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def children(self) -> list[int]:
        if not self.alive:
            return []
        try:
            return [c.pid for c in psutil.Process(self.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> list[int]:
        """SIGKILL the process and its pool children (a whole worker dies at once)."""
        if not self.alive:
            return []
        kids = self.children()
        for pid in [self.pid, *kids]:
            _kill(pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait()
        _reap(kids)
        return [self.pid, *kids]

    def stop(self, timeout: float = 20.0) -> None:
        if not self.alive:
            return
        kids = self.children()
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in kids:
            _kill(pid, signal.SIGKILL)
        _reap(kids)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pids: list[int], timeout: float = 5.0) -> None:
    """Wait until the given (non-child) processes are gone."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)


def start_all(*procs: Proc, timeout: float = 60.0) -> None:
    """Start processes side by side (imports take seconds each), then wait for all."""
    offsets = [p.launch() for p in procs]
    for proc, offset in zip(procs, offsets, strict=True):
        proc.wait_ready(offset, timeout)


# --- the fake LLM's answers ------------------------------------------------------------------


def chat_reply(request: RecordedRequest) -> Behaviour:
    return Text("Try the Winter Jazz Standards night on Friday, then a late dinner nearby.",
                output_tokens=20, chunk_size=24)


def answer(request: RecordedRequest) -> Behaviour:
    """Valid ideas for a structured-output request, a short chat reply for a stream."""
    if requested_schema(request) is not None:
        return ideas_responder(request)
    return chat_reply(request)


# --- the rig ---------------------------------------------------------------------------------


@dataclass
class Rig:
    """Everything one chaos test runs against; see the module docstring."""

    tag: str
    tmp: Path
    db_url: str
    redis_base: str
    llm: FakeLLMServer
    api: FakeNestApi
    webhook: WebhookReceiver
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)
    engine: sa.Engine | None = None
    _counter: int = 0

    # -- processes --

    def _proc(self, name: str, argv: list[str], ready: str | None,
              env: dict[str, str] | None = None) -> Proc:
        workdir = self.tmp / name
        workdir.mkdir(exist_ok=True)
        full_env = {**os.environ, **self.env, **(env or {})}
        full_env.pop("VAMU_CHAOS", None)
        proc = Proc(name, argv, full_env, workdir / f"{name}.log", ready)
        self.procs.append(proc)
        return proc

    def bridge(self, env: dict[str, str] | None = None, name: str = "bridge") -> Proc:
        return self._proc(name, [sys.executable, "-m", "workers.bridge"], "bridge ready", env)

    def notify_worker(self, env: dict[str, str] | None = None, name: str = "notify") -> Proc:
        """`python -m workers.notify`: deliveries, plus housekeeping (the reaper and the outbox
        sweep) while it holds the housekeeping lease."""
        return self._proc(name, [sys.executable, "-m", "workers.notify", "--hostname",
                                 f"{name}-{self.tag}@%h", "--without-gossip",
                                 "--without-mingle"], " ready.", env)

    def llm_worker(self, name: str, *, pool: str = "threads", concurrency: int = 8,
                   env: dict[str, str] | None = None, loglevel: str = "INFO") -> Proc:
        argv = [sys.executable, "-m", "celery", "-A", "vamu_tasks", "worker", "--pool", pool,
                "--concurrency", str(concurrency), "--queues", "inspiration,chatbot,agent",
                "--hostname", f"{name}-{self.tag}@%h", "--loglevel", loglevel,
                "--without-gossip", "--without-mingle"]
        return self._proc(name, argv, " ready.", env)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    # -- jobs --

    def token(self) -> str:
        self._counter += 1
        return f"{self.tag}-{self._counter:04d}"

    def inspiration(self, user: str | None = None, opts: dict[str, Any] | None = None,
                    **data: Any) -> dict[str, Any]:
        token = self.token()
        user = user or USERS[self._counter % len(USERS)]
        # requestId: the idempotency key a well-behaved NestJS producer sends (docs/contracts.md);
        # without it a Queue.add that ioredis re-sends after a Redis crash makes a second job.
        return {"name": "inspiration.generate", "opts": opts or {},
                "data": {"userId": user, "count": 2, "hint": f"chaos token {token}",
                         "requestId": f"req-{token}", **data}}

    def chat(self, user: str | None = None, opts: dict[str, Any] | None = None) -> dict[str, Any]:
        token = self.token()
        user = user or USERS[self._counter % len(USERS)]
        return {"name": "chatbot.reply", "opts": opts or {},
                "data": {"userId": user, "conversationId": f"conv-{token}",
                         "message": f"chaos token {token}: any jazz this week?",
                         "requestId": f"req-{token}"}}

    def produce(self, jobs: list[dict[str, Any]], *, rate: float = 0.0, wait: bool = True,
                timeout_s: float = 120.0, queue: str | None = None,
                redis_url: str | None = None) -> Producer:
        spec = {"redis": redis_url or self.env["VAMU_REDIS_URL"], "prefix": "bull",
                "queue": queue or self.env["VAMU_BULLMQ_QUEUE"], "jobs": jobs,
                "ratePerSec": rate, "wait": wait, "timeoutMs": int(timeout_s * 1000)}
        return Producer(spec, timeout_s + 60)

    # -- counting --

    def db(self) -> sa.Engine:
        if self.engine is None:
            self.engine = sa.create_engine(self.db_url, poolclass=sa.pool.NullPool)
        return self.engine

    def query(self, sql: str, **params: Any) -> list[sa.Row[Any]]:
        with self.db().connect() as conn:
            return list(conn.execute(sa.text(sql), params).all())

    def jobs(self) -> list[sa.Row[Any]]:
        return self.query(
            "SELECT id, feature, user_id, status, attempts, error_kind, error_message, "
            "source_ref, provider, request, result, created_at, started_at, finished_at "
            "FROM ai_jobs")

    def status_counts(self) -> Counter[str]:
        return Counter({r[0]: r[1] for r in self.query(
            "SELECT status, count(*) FROM ai_jobs GROUP BY status")})

    def wait_jobs_end(self, expected: int, timeout: float, idle_s: float = 30.0) -> Counter[str]:
        """Wait until `expected` rows exist and none is queued or running; give up at `timeout`
        or once no job has ended for `idle_s` seconds (what is left is stuck)."""
        deadline = time.monotonic() + timeout
        last_change, last_ended = time.monotonic(), -1
        while True:
            counts = self.status_counts()
            total = sum(counts.values())
            ended = total - counts["queued"] - counts["running"]
            if total >= expected and ended == total:
                return counts
            now = time.monotonic()
            if ended != last_ended:
                last_change, last_ended = now, ended
            if now > deadline or now - last_change > idle_s:
                return counts
            time.sleep(0.25)

    def token_of(self, text: str) -> str | None:
        match = re.search(rf"{re.escape(self.tag)}-\d{{4}}", text)
        return match.group(0) if match else None

    def llm_requests_by_token(self) -> dict[str, list[RecordedRequest]]:
        out: dict[str, list[RecordedRequest]] = defaultdict(list)
        for request in self.llm.requests:
            token = self.token_of(json.dumps(request.body))
            if token:
                out[token].append(request)
        return out

    def job_token(self, row: sa.Row[Any]) -> str | None:
        return self.token_of(json.dumps(row.request))

    def duplicates(self) -> dict[str, int]:
        """Rows that must exist once: job rows per request, outbox rows, chat messages."""
        q = self.query
        return {
            "job_rows_per_source_ref": q(
                "SELECT count(*) FROM (SELECT source_ref FROM ai_jobs GROUP BY source, "
                "source_ref HAVING count(*) > 1) d")[0][0],
            "job_rows_per_token": sum(n - 1 for n in Counter(
                self.job_token(r) for r in self.jobs()).values() if n > 1),
            "outbox_rows_per_job_event": q(
                "SELECT count(*) FROM (SELECT job_id, event FROM notification_outbox "
                "GROUP BY job_id, event HAVING count(*) > 1) d")[0][0],
            "chat_messages_per_job_role": q(
                "SELECT count(*) FROM (SELECT job_id, role FROM chat_messages "
                "GROUP BY job_id, role HAVING count(*) > 1) d")[0][0],
            "assistant_messages_per_conversation": q(
                "SELECT count(*) FROM (SELECT conversation_id FROM chat_messages "
                "WHERE role = 'assistant' GROUP BY conversation_id HAVING count(*) > 1) d")[0][0],
        }

    def broker_holds(self, job_ids: list[str]) -> dict[str, bool]:
        """Whether each job still has a Celery message in the broker (queued or unacked)."""
        client = redis.Redis.from_url(self.env["VAMU_BROKER_URL"])
        prefix = self.env["VAMU_BROKER_KEY_PREFIX"]
        try:
            blobs = [b.decode(errors="replace")
                     for queue in ("inspiration", "chatbot", "agent")
                     for b in client.lrange(f"{prefix}{queue}", 0, -1)]
            blobs += [b.decode(errors="replace") for b in client.hvals(f"{prefix}unacked")]
        finally:
            client.close()
        bodies = []
        for blob in blobs:
            bodies.append(blob)
            try:
                message = json.loads(blob)
                message = message[0] if isinstance(message, list) else message
                bodies.append(base64.b64decode(message["body"]).decode(errors="replace"))
            except (ValueError, KeyError, TypeError):
                pass
        return {job: any(job in body for body in bodies) for job in job_ids}

    def stuck(self) -> dict[str, list[str]]:
        """Jobs that did not end, by what holds them: a lease of a dead process (running), or
        no Celery message left anywhere in the broker (queued, never started). Each entry:
        "<job id prefix> <status> attempts=<n> owner=<lease owner> in_broker=<bool>"."""
        rows = self.query("SELECT id::text, status, attempts, lease_owner FROM ai_jobs "
                          "WHERE status IN ('queued', 'running')")
        held = self.broker_holds([r[0] for r in rows])
        out: dict[str, list[str]] = {"running": [], "queued_without_a_message": [], "other": []}
        for job, status, attempts, owner in rows:
            if status == "running":
                key = "running"
            elif attempts == 0 and not held[job]:
                key = "queued_without_a_message"
            else:
                key = "other"
            out[key].append(f"{job[:8]} {status} attempts={attempts} owner={owner} "
                            f"in_broker={held[job]}")
        return out

    def webhook_counts(self) -> dict[str, int]:
        ids = [d["id"] for d in self.webhook.deliveries]
        return {"webhook_deliveries": len(ids), "webhook_distinct_ids": len(set(ids))}

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


class Producer:
    """The Node producer running in the background; `result()` waits for its report."""

    def __init__(self, spec: dict[str, Any], timeout_s: float) -> None:
        node = require_node_modules()
        env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")}
        self.added: list[dict[str, Any]] = []
        self.outcomes: list[dict[str, Any]] = []
        self._done = False
        self._lock = threading.Lock()
        self._timeout = timeout_s
        self._process = subprocess.Popen(
            [str(node), str(PRODUCER)], cwd=CHAOS_DIR, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        )
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(spec, allow_nan=False))
        self._process.stdin.close()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if not line.strip():
                continue
            message = json.loads(line)
            with self._lock:
                if "added" in message:
                    self.added.append(message)
                elif message.get("done"):
                    self._done = True
                else:
                    self.outcomes.append(message)

    @property
    def added_count(self) -> int:
        with self._lock:
            return len(self.added)

    def result(self) -> list[dict[str, Any]]:
        try:
            self._process.wait(self._timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(10)
        assert self._process.stderr is not None and self._process.stdout is not None
        err = self._process.stderr.read()
        self._process.stderr.close()
        self._process.stdout.close()
        assert self._process.returncode == 0 and self._done, f"producer failed: {err[-3000:]}"
        return sorted(self.outcomes, key=lambda o: o["index"])

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        for stream in (self._process.stdout, self._process.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def bullmq_counts(outcomes: list[dict[str, Any]]) -> dict[str, int]:
    states = Counter(o["state"] for o in outcomes)
    return {f"bullmq_{k}": v for k, v in sorted(states.items())}


def socket_counts(events: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, int]:
    """Deliveries of the given events at the Socket.IO clients, and distinct (jobId, event)."""
    seen = [(e["data"]["jobId"], e["event"]) for e in events if e["event"] in names]
    return {"socketio_deliveries": len(seen), "socketio_distinct": len(set(seen))}


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def worker_crashes(*procs: Proc) -> list[str]:
    """Signs that a process died or a worker lost a pool child on its own."""
    out = []
    for proc in procs:
        if not proc.alive:
            out.append(f"{proc.name} exited with {proc.process and proc.process.returncode}")
        text = proc.log_text()
        for marker in ("WorkerLostError", "Unrecoverable error", "Segmentation fault",
                       "Traceback (most recent call last)"):
            if marker in text:
                out.append(f"{proc.name}: {marker}")
    return out


# --- fixtures --------------------------------------------------------------------------------


def _cleanup_redis(redis_base: str, tag: str) -> None:
    for db, patterns in ((11, [f"chaos-{tag}:*"]), (12, [f"bull:chaos-{tag}*", "vamu:chat:*"])):
        client = redis.Redis.from_url(f"{redis_base}/{db}")
        try:
            for pattern in patterns:
                if pattern == "vamu:chat:*":
                    continue  # expire by themselves within the hour; other sessions use them
                keys = list(client.scan_iter(match=pattern, count=1000))
                for i in range(0, len(keys), 500):
                    client.delete(*keys[i : i + 500])
        except redis.ConnectionError:
            pass
        finally:
            client.close()


@contextmanager
def rigs(tmp: Path) -> Iterator[Callable[..., Rig]]:
    """Build rigs under `tmp`: `build(redis_base=..., worker_db_url=..., **env)`; all of them
    (processes, fakes, database, Redis keys) are torn down on exit."""
    built: list[Rig] = []
    stack: list[Any] = []

    def build(*, redis_base: str = REDIS_BASE_URL,
              worker_db_url: Callable[[str], str] | None = None,
              notify: str = "socketio,webhook", llm_key: str = LLM_KEY,
              api_token: str = API_TOKEN, webhook_secret: str = WEBHOOK_SECRET,
              **env: str) -> Rig:
        tag = uuid.uuid4().hex[:6]
        db_cm = temporary_database("vamu_chaos")
        db_url = db_cm.__enter__()
        stack.append(db_cm)
        upgrade(db_url)
        llm = FakeLLMServer(api_key=llm_key, latency=LLM_LATENCY_S, responder=answer).start()
        stack.append(llm)
        api = FakeNestApi(token=api_token).start()
        stack.append(api)
        webhook = WebhookReceiver(webhook_secret).__enter__()
        stack.append(webhook)
        rig_tmp = tmp / f"rig-{tag}"
        rig_tmp.mkdir(parents=True)
        base_env = {
            "VAMU_DATA_DIR": str(rig_tmp / "data"),
            "VAMU_BROKER_URL": f"{redis_base}/11",
            "VAMU_BROKER_KEY_PREFIX": f"chaos-{tag}:",
            "VAMU_DATABASE_URL": worker_db_url(db_url) if worker_db_url else db_url,
            "VAMU_REDIS_URL": f"{redis_base}/12",
            "VAMU_API_BASE_URL": api.url,
            "VAMU_API_TOKEN": api_token,
            "VAMU_API_TIMEOUT_S": "2",
            "VAMU_API_RETRIES": "1",
            "VAMU_LLM_PROVIDER": "openai",
            "VAMU_LLM_FALLBACK": "anthropic",
            "OPENAI_API_KEY": llm_key,
            "OPENAI_BASE_URL": llm.openai_base_url,
            "ANTHROPIC_API_KEY": llm_key,
            "ANTHROPIC_BASE_URL": llm.anthropic_base_url,
            "VAMU_LLM_STRICT_VALIDATION": "true",
            "VAMU_LLM_TIMEOUT_S": "5",
            "VAMU_JOB_MAX_RETRIES": "3",
            "VAMU_RETRY_BACKOFF_BASE_S": "0.2",
            "VAMU_RETRY_BACKOFF_MAX_S": "5",
            "VAMU_NOTIFY": notify,
            "VAMU_SOCKETIO_KEY": f"chaos-{tag}",
            "VAMU_WEBHOOK_URL": webhook.url,
            "VAMU_WEBHOOK_SECRET": webhook_secret,
            "VAMU_OUTBOX_STALE_AFTER_S": "3",
            "VAMU_OUTBOX_SWEEP_INTERVAL_S": "2",
            "VAMU_LLM_CONCURRENCY": "16",
            "VAMU_NOTIFY_CONCURRENCY": "8",
            "VAMU_BULLMQ_QUEUE": f"chaos-{tag}",
            "VAMU_BULLMQ_SYNC_QUEUE": f"chaos-{tag}-sync",
            "VAMU_BRIDGE_CONCURRENCY": "8",
            "VAMU_BRIDGE_SYNC_CONCURRENCY": "2",
            "VAMU_BRIDGE_LOCK_DURATION_MS": "2000",
            "VAMU_BRIDGE_STALLED_INTERVAL_MS": "1000",
            "VAMU_QUOTA_JOBS_PER_USER_PER_HOUR": "0",
            # A job queued this long without starting is sent again (its message may be lost);
            # 120 s by default, shorter here so the tests see it happen.
            "VAMU_STALE_QUEUED_S": "20",
            **env,
        }
        rig = Rig(tag, rig_tmp, db_url, redis_base, llm, api, webhook, base_env)
        built.append(rig)
        return rig

    try:
        yield build
    finally:
        for rig in built:
            rig.stop_all()
            rig.close()
            _cleanup_redis(rig.redis_base, rig.tag)
        for item in reversed(stack):
            item.__exit__(None, None, None)


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    with rigs(tmp_path) as build:
        yield build


@contextmanager
def listeners() -> Iterator[Callable[[Rig], SocketIOListener]]:
    """Socket.IO servers with one client per sample user, on a rig's Redis and key."""
    opened: list[SocketIOListener] = []

    def open_for(rig: Rig) -> SocketIOListener:
        room = SocketIOListener(rig.env["VAMU_REDIS_URL"], USERS, key=rig.env["VAMU_SOCKETIO_KEY"])
        room.__enter__()
        opened.append(room)
        return room

    try:
        yield open_for
    finally:
        for room in opened:
            room.__exit__(None, None, None)


@pytest.fixture
def listener() -> Iterator[Callable[[Rig], SocketIOListener]]:
    with listeners() as open_for:
        yield open_for


class OwnRedis:
    """A redis-server of the test's own, on a fixed port, with AOF in its own directory."""

    def __init__(self, directory: Path, port: int, password: str | None = None) -> None:
        self.directory = directory
        self.port = port
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "redis.log"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    def start(self) -> OwnRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                 "--dir", str(self.directory), "--daemonize", "no",
                 *(["--requirepass", self.password] if self.password else [])],
                stdout=log, stderr=subprocess.STDOUT,
            )
        client = redis.Redis(port=self.port, password=self.password)
        try:
            ok = wait_until(lambda: _ping(client), 20)
        finally:
            client.close()
        if not ok:
            raise RuntimeError(f"redis-server did not start: {self.log_path.read_text()[-2000:]}")
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A Redis of the test's own (AOF, appendfsync always); ask for it before `make_rig`."""
    from tests.support.services import free_port

    server = OwnRedis(tmp_path / "redis", free_port()).start()
    try:
        yield server
    finally:
        server.stop()
