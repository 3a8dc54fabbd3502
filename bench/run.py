#!/usr/bin/env python3
"""`make bench`: jobs through the real path, side by side with what a team would otherwise run.

    Node BullMQ producer ─▶ bridge ─▶ Celery workers ─▶ fake NestJS API ─▶ fake LLM ─▶
    PostgreSQL ─▶ notify worker ─▶ Redis ─▶ Socket.IO server (redis-adapter) ─▶ socket.io-client

Usage:
    .venv/bin/python bench/run.py            # full run (~12 min): docs/performance.md's figures
    .venv/bin/python bench/run.py --quick    # every scenario for a moment (~1.5 min), for CI
    .venv/bin/python bench/run.py --only zero,chat --no-profile

Writes bench/results/<timestamp>.json, <timestamp>.md (the figures table) and
<timestamp>-*.png, and prints the table. Exit status 0 when every scenario ran (a missed
target is a result, not an error), 1 when the harness itself failed.

Systems, all against the same fakes, PostgreSQL and Redis, one at a time, in one run:
- vamu: `python -m workers.bridge`, N x `python -m workers.llm` (threads pool,
  VAMU_LLM_CONCURRENCY=250), one `python -m workers.notify` — the documented deployment;
- (a) bullmq-python: bench/baseline_bullmq.py, one asyncio `bullmq` Worker doing the work itself;
- (b) celery-defaults: the same bridge, and `celery -A vamu_tasks worker --pool prefork
  --concurrency 2 --prefetch-multiplier 4` on every queue.

Every process the bench starts is recorded and stopped by its PID at the end, also on Ctrl-C
or an exception. How each figure is measured is in docs/performance.md ("Method").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis
import sqlalchemy as sa

from vamu_tasks.store.migrate import upgrade

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
USERS = ["u-ada", "u-bruno", "u-chioma", "u-dev"]
LLM_CONCURRENCY = 250
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


# ----------------------------------------------------------------------------- statistics


def pct(values: list[float], scale: float = 1000.0) -> dict[str, Any] | None:
    """p50/p90/p99/max/mean of seconds, in milliseconds (nearest-rank)."""
    if not values:
        return None
    v = sorted(values)
    n = len(v)

    def at(q: float) -> float:
        return round(v[min(n - 1, max(0, math.ceil(q * n) - 1))] * scale, 3)

    return {"n": n, "p50": at(0.50), "p90": at(0.90), "p99": at(0.99),
            "max": round(v[-1] * scale, 3), "mean": round(sum(v) / n * scale, 3)}


def quantile_curve(values: list[float]) -> list[float]:
    """201 quantiles (0, 0.5, …, 100 %), in ms, for CDF plots."""
    if not values:
        return []
    v = sorted(values)
    n = len(v)
    return [round(v[min(n - 1, int(i / 200 * (n - 1)))] * 1000, 3) for i in range(201)]


# ----------------------------------------------------------------------------- stacks


@dataclass
class Stack:
    bench: Bench
    kind: str  # vamu | bullmq-python | celery-defaults
    workers: int = 1
    pool_size: int = 10
    concurrency: int = LLM_CONCURRENCY
    profile: bool = False
    env: dict[str, str] = field(default_factory=dict)  # extra settings, e.g. for a what-if
    procs: list[Proc] = field(default_factory=list)
    dirty: bool = False
    prefix: str = ""
    profiles: dict[str, Path] = field(default_factory=dict)

    @property
    def label(self) -> str:
        extra = f", {self.workers} LLM worker processes" if self.kind == "vamu" else ""
        return SYSTEM_LABELS[self.kind] + extra

    def start(self) -> None:
        b = self.bench
        self.prefix = b.new_prefix()
        env = {**b.base_env(self.prefix), **self.env}
        data_dir = Path(env["VAMU_DATA_DIR"])
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = [PY, str(BENCH / "probe.py")]
        plan: list[tuple[str, list[str], dict[str, str], str]] = []
        if self.kind in ("vamu", "celery-defaults"):
            plan.append(("bridge", [*probe, "bridge", "workers.bridge"], {}, "bridge ready"))
        if self.kind == "vamu":
            for i in range(1, self.workers + 1):
                plan.append((f"llm{i}", [*probe, f"llm{i}", "workers.llm", "--hostname",
                                         f"llm{i}-{self.prefix}@%h"],
                             {"VAMU_LLM_CONCURRENCY": str(self.concurrency),
                              "VAMU_DATABASE_POOL_SIZE": str(self.pool_size)}, " ready."))
            plan.append(("notify", [*probe, "notify", "workers.notify", "--hostname",
                                    f"notify-{self.prefix}@%h"], {}, " ready."))
        elif self.kind == "celery-defaults":
            plan.append(("celery", [*probe, "celery", "celery", "-A", "vamu_tasks", "worker",
                                    "--pool", "prefork", "--concurrency", "2",
                                    "--prefetch-multiplier", "4",
                                    "--queues", "inspiration,chatbot,agent,notify",
                                    "--loglevel", "INFO", "--hostname",
                                    f"defaults-{self.prefix}@%h"], {}, " ready."))
        else:
            plan.append(("baseline", [PY, str(BENCH / "baseline_bullmq.py")],
                         {"BENCH_BASELINE_CONCURRENCY": str(LLM_CONCURRENCY),
                          "VAMU_DATABASE_POOL_SIZE": "20"}, "baseline ready"))
        started: list[tuple[Proc, str]] = []
        for name, argv, extra, ready in plan:
            profiled = False
            if self.profile:
                out = b.rundir / f"profile-{name}.txt"
                self.profiles[name] = out
                # --gil: only the thread holding the GIL, i.e. where Python burns CPU.
                argv = [PYSPY, "record", "--rate", str(b.args.profile_rate), "--gil",
                        "--format", "raw", "--full-filenames", "--nonblocking",
                        "--output", str(out), "--", *argv]
                profiled = True
            proc = b.spawn(name, "sut", argv, env={**env, **extra}, cwd=data_dir,
                           profiled=profiled)
            self.procs.append(proc)
            started.append((proc, ready))
        for proc, ready in started:
            b.wait_log(proc, ready, timeout=60)
        log(f"started {self.label} ({', '.join(p.name for p in self.procs)})")

    def stop(self) -> None:
        def sig_for(proc: Proc) -> int:
            # A Celery worker with a backlog would finish its reserved tasks first (warm
            # shutdown); SIGQUIT is its cold shutdown. The backlog's keys are deleted below.
            quick = self.dirty and proc.name != "bridge" and not proc.profiled
            return signal.SIGQUIT if quick else signal.SIGTERM

        stop_all(self.procs, sig_for=sig_for)
        self.procs.clear()
        self.bench.delete_keys(self.prefix)

    def restart(self) -> None:
        log(f"restarting {self.label}: the last scenario left unfinished jobs")
        self.stop()
        self.dirty = False
        self.start()
        self.bench.prime(self)


# ----------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.tag = f"vb{uuid.uuid4().hex[:6]}"
        self.rundir = Path(tempfile.mkdtemp(prefix="vamu-bench-"))
        self.probe_dir = self.rundir / "probes"
        self.probe_dir.mkdir()
        self.redis_url = f"{REDIS_BASE}/{args.redis_db}"
        self.redis = redis.Redis.from_url(self.redis_url)
        self.sio_key = f"{self.tag}-sio"
        self.procs: list[Proc] = []
        self.exit = contextlib.ExitStack()
        self._prefixes = 0
        self._probe_offsets: dict[Path, int] = {}
        self.chat_job_ids: list[str] = []
        self.pg_url = ""
        self.llm_url = ""
        self.api_url = ""
        self.engine: sa.Engine | None = None
        self.node = shutil.which("node")

    # --- processes

    def spawn(self, name: str, group: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None, pipes: bool = False, profiled: bool = False) -> Proc:
        log_path = self.rundir / f"{name}-{len(self.procs)}.log"
        logf = open(log_path, "ab")
        popen = subprocess.Popen(
            argv, env=env or dict(os.environ), cwd=cwd or self.rundir,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else logf, stderr=logf,
            text=pipes, start_new_session=True,
        )
        logf.close()
        proc = Proc(name, group, popen, log_path, profiled)
        self.procs.append(proc)
        return proc

    def wait_log(self, proc: Proc, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = proc.log_text()
            if pattern in text:
                return text
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited early:\n{text[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{proc.name} not ready after {timeout}s:\n{proc.log_text()[-3000:]}")

    def stop_all(self) -> None:
        stop_all(list(reversed(self.procs)), timeout=10)

    def new_prefix(self) -> str:
        self._prefixes += 1
        return f"{self.tag}-s{self._prefixes}"

    def base_env(self, prefix: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("VAMU_", "OPENAI_", "ANTHROPIC_", "PROMETHEUS_"))}
        env.update({
            "PYTHONUNBUFFERED": "1",
            "VAMU_DATA_DIR": str(self.rundir / prefix),
            "VAMU_BROKER_URL": self.redis_url,
            "VAMU_BROKER_KEY_PREFIX": f"{prefix}:",
            "VAMU_DATABASE_URL": self.pg_url,
            "VAMU_REDIS_URL": self.redis_url,
            "VAMU_API_BASE_URL": self.api_url,
            "VAMU_API_TOKEN": API_TOKEN,
            "VAMU_LLM_PROVIDER": "openai",
            "OPENAI_API_KEY": LLM_KEY,
            "OPENAI_BASE_URL": self.llm_url + "/v1",
            "VAMU_NOTIFY": "socketio",
            "VAMU_SOCKETIO_KEY": self.sio_key,
            "VAMU_BULLMQ_QUEUE": "vamu-ai",
            "VAMU_BULLMQ_PREFIX": f"{prefix}-bull",
            # The driver sends thousands of jobs for four users: no per-user hourly quota.
            "VAMU_QUOTA_JOBS_PER_USER_PER_HOUR": "0",
            "VAMU_BENCH_PROBE_DIR": str(self.probe_dir),
        })
        if self.args.probe_off:
            env["VAMU_BENCH_PROBE_OFF"] = "1"
        return env

    # --- shared services

    def start_services(self) -> None:
        self.pg_url = self.exit.enter_context(temporary_database())
        upgrade(self.pg_url)
        self.engine = sa.create_engine(self.pg_url)
        self.exit.callback(self.engine.dispose)
        if self.redis.dbsize():
            log(f"note: Redis DB {self.args.redis_db} is not empty; only this run's keys are "
                "deleted at the end")
        llm = self.spawn("fake-llm", "harness",
                         [PY, str(BENCH / "fake_llm.py"), "--port", "0"],
                         env={**os.environ, "VAMU_BENCH_PROBE_DIR": str(self.probe_dir)})
        api = self.spawn("fake-api", "harness",
                         [PY, "-m", "vamu_tasks.testing.fake_api", "--port", "0",
                          "--token", API_TOKEN])
        self.llm_url = json.loads(self._json_line(llm, '{"url"'))["url"]
        self.api_url = json.loads(self._json_line(api, '{"url"'))["url"]
        log(f"fake LLM {self.llm_url}, fake API {self.api_url}, database {self.pg_url}")

    def _json_line(self, proc: Proc, start: str) -> str:
        text = self.wait_log(proc, start, timeout=30)
        return next(line for line in text.splitlines() if line.startswith(start))

    def set_latency(self, seconds: float) -> None:
        import urllib.request

        body = json.dumps({"latency": seconds}).encode()
        request = urllib.request.Request(self.llm_url + "/_fake/config", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def truncate(self) -> None:
        assert self.engine is not None
        with self.engine.begin() as conn:
            tables = [r[0] for r in conn.execute(sa.text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"))]
            if tables:
                conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} CASCADE"))

    def delete_keys(self, prefix: str) -> None:
        if not prefix:
            return
        for pattern in (f"{prefix}:*", f"{prefix}-bull:*"):
            batch: list[bytes] = []
            for key in self.redis.scan_iter(match=pattern, count=2000):
                batch.append(key)
                if len(batch) >= 1000:
                    self.redis.delete(*batch)
                    batch = []
            if batch:
                self.redis.delete(*batch)

    def cleanup_redis(self) -> None:
        for n in range(1, self._prefixes + 1):
            self.delete_keys(f"{self.tag}-s{n}")
        streams = [f"vamu:chat:{job_id}" for job_id in self.chat_job_ids]
        for i in range(0, len(streams), 1000):
            self.redis.delete(*streams[i:i + 1000])

    # --- measurements

    def cpu_snapshot(self) -> dict[str, Any]:
        per: dict[int, tuple[str, str, float]] = {}
        for proc in self.procs:
            if not proc.alive():
                continue
            for p in proc.tree():
                with contextlib.suppress(psutil.Error):
                    name = "py-spy" if p.name() == "py-spy" else proc.name
                    group = "profiler" if name == "py-spy" else proc.group
                    per[p.pid] = (name, group, cpu_seconds(p))
        for p in psutil.process_iter(["name"]):
            if p.info["name"] in ("postgres", "redis-server"):
                with contextlib.suppress(psutil.Error):
                    per[p.pid] = (p.info["name"], "services", cpu_seconds(p))
        machine = psutil.cpu_times()
        total = sum(machine)
        idle = machine.idle + getattr(machine, "iowait", 0.0)
        return {"t": time.time(), "per": per, "busy": total - idle, "total": total}

    @staticmethod
    def cpu_delta(s0: dict[str, Any], s1: dict[str, Any]) -> dict[str, Any]:
        by_name: Counter[str] = Counter()
        by_group: Counter[str] = Counter()
        for pid, (name, group, cpu) in s1["per"].items():
            before = s0["per"].get(pid)
            delta = cpu - (before[2] if before else 0.0)
            by_name[name] += delta
            by_group[group] += delta
        wall = s1["t"] - s0["t"]
        ncpu = psutil.cpu_count() or 1
        busy = (s1["busy"] - s0["busy"]) / (s1["total"] - s0["total"]) * wall * ncpu
        attributed = sum(by_group.values())
        return {
            "wall_s": round(wall, 3),
            "by_process_s": {k: round(v, 3) for k, v in sorted(by_name.items())},
            "by_group_s": {k: round(v, 3) for k, v in sorted(by_group.items())},
            "machine_busy_s": round(busy, 3),
            "machine_busy_pct": round(100 * busy / (wall * ncpu), 1),
            # CPU used by processes this bench did not start (other users of the machine).
            "other_s": round(max(0.0, busy - attributed), 3),
        }

    def service_counters(self) -> dict[str, Any]:
        """PostgreSQL activity in the bench database (Redis commands are counted by the probes:
        the server's own counters include every other client of the shared server)."""
        assert self.engine is not None
        with self.engine.connect() as conn:
            row = conn.execute(sa.text(
                "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted, "
                "tup_updated, tup_deleted FROM pg_stat_database "
                "WHERE datname = current_database()")).one()
        pg = dict(row._mapping)
        return {"pg": pg}

    @staticmethod
    def counters_per_job(c0: dict[str, Any], c1: dict[str, Any], jobs: int) -> dict[str, Any]:
        if not jobs:
            return {}
        # pg_stat_database of the bench's own database (stats are flushed about once a second).
        return {k: round((int(c1["pg"][k]) - int(c0["pg"][k])) / jobs, 2) for k in c1["pg"]}

    def read_probes(self) -> list[list[Any]]:
        out: list[list[Any]] = []
        for path in sorted(self.probe_dir.glob("*.jsonl")):
            offset = self._probe_offsets.get(path, 0)
            with open(path) as f:
                f.seek(offset)
                data = f.read()
            end = data.rfind("\n") + 1
            self._probe_offsets[path] = offset + len(data[:end].encode())
            out.extend(json.loads(line) for line in data[:end].splitlines() if line)
        return out

    def fetch_rows(self) -> list[dict[str, Any]]:
        assert self.engine is not None
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT id, source_ref, status, error_kind, feature, "
                "extract(epoch from created_at) AS created, "
                "extract(epoch from started_at) AS started, "
                "extract(epoch from finished_at) AS finished FROM ai_jobs"))
            return [dict(r._mapping) for r in rows]

    def prime(self, stack: Stack) -> None:
        """A few seconds of jobs nobody measures: the first jobs of a process pay for lazy
        imports (the SDKs), client and pool set-up; in production a worker is long-lived."""
        self.scenario(stack, f"prime-{stack.prefix}", mode="closed", in_flight=8, warmup=0,
                      duration=0.5 if self.quick else 3.0, drain=30, quiet=True)
        if stack.dirty:
            raise RuntimeError(f"{stack.label}: priming jobs did not finish")

    # --- one scenario

    def scenario(self, stack: Stack, name: str, *, kind: str = "inspiration", mode: str,
                 rate: float = 0, in_flight: int = 0, warmup: float, duration: float,
                 drain: float, latency: float = 0.0, max_backlog: int = 3000,
                 quiet: bool = False) -> dict[str, Any]:
        if stack.dirty:
            stack.restart()
        self.set_latency(latency)
        self.truncate()
        self.read_probes()  # skip what earlier scenarios recorded
        out = self.rundir / f"{name}.driver.json"
        spec = {
            "redis": self.redis_url, "prefix": f"{stack.prefix}-bull", "queue": "vamu-ai",
            "socketioKey": self.sio_key, "users": USERS, "kind": kind, "tag": f"{self.tag}{name}",
            "mode": mode, "rate": rate, "inFlight": in_flight, "warmupS": warmup,
            "durationS": duration, "drainS": drain, "maxBacklog": max_backlog, "out": str(out),
        }
        params = {k: spec[k] for k in ("kind", "mode", "rate", "inFlight", "warmupS", "durationS",
                                        "drainS", "maxBacklog")}
        params["llmLatencyS"] = latency
        what = f"{rate}/s open loop" if mode == "open" else f"{in_flight} in flight"
        if not quiet:
            log(f"scenario {name}: {stack.label}, {kind}, {what}, LLM latency {latency}s, "
                f"{warmup}s warm-up + {duration}s measured")
        window = self._drive(stack, name, spec, timeout=warmup + duration + drain + 60)
        time.sleep(0.6)  # the probes flush every 0.25 s
        data = json.loads(out.read_text())
        rows = self.fetch_rows()
        result = analyse(data, rows, self.read_probes(), kind=kind)
        result.update({"system": stack.kind, "label": stack.label, "workers": stack.workers,
                       "params": params, "cpu": window["cpu"], "memory": window["memory"]})
        add_cpu_per_job(result)
        if window["counters"]:
            result["postgres_per_job"] = self.counters_per_job(
                *window["counters"], result["throughput"]["completed_in_window"])
        if kind == "chat":
            self.chat_job_ids.extend(str(r["id"]) for r in rows)
        stack.dirty = data["meta"]["unfinished"] > 0
        if not quiet:
            log(f"  {result['throughput']['jobs_per_s']} jobs/s in the window, e2e "
                f"{_fmt_pct(result['latency_ms'].get('end_to_end'))}, "
                f"unfinished {data['meta']['unfinished']}")
        return result

    def _start_driver(self, spec: dict[str, Any]) -> tuple[Proc, queue.Queue[str | None]]:
        if not self.node:
            raise RuntimeError("node is not on PATH (Node 20+ is needed for the driver)")
        if not (NODE_DIR / "node_modules" / "bullmq").is_dir():
            raise RuntimeError(f"{NODE_DIR}/node_modules is missing: run `make node-deps`")
        env = {**os.environ, "BENCH_NODE_MODULES": str(NODE_DIR / "node_modules")}
        driver = self.spawn("driver", "harness", [self.node, str(BENCH / "driver.js")],
                            pipes=True, env=env)
        assert driver.popen.stdin is not None and driver.popen.stdout is not None
        driver.popen.stdin.write(json.dumps(spec) + "\n")
        driver.popen.stdin.close()
        lines: queue.Queue[str | None] = queue.Queue()
        stdout = driver.popen.stdout

        def pump() -> None:
            for line in stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        return driver, lines

    def _drive(self, stack: Stack, name: str, spec: dict[str, Any],
               timeout: float) -> dict[str, Any]:
        """Run the driver; take CPU, memory and database counters around its measured window."""
        driver, lines = self._start_driver(spec)
        deadline = time.monotonic() + timeout
        snaps: list[dict[str, Any]] = []
        counters: list[dict[str, Any]] = []
        sampler: RssSampler | None = None
        memory: dict[str, Any] = {}
        try:
            while True:
                try:
                    line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    line = ""
                if time.monotonic() > deadline:
                    raise RuntimeError(f"scenario {name}: driver timed out")
                if line is None:
                    raise RuntimeError(
                        f"scenario {name}: driver exited:\n{driver.log_text()[-3000:]}")
                msg = json.loads(line) if line else {}
                phase = msg.get("phase")
                if phase == "measure":
                    snaps.append(self.cpu_snapshot())
                    counters.append(self.service_counters())
                    sampler = RssSampler(list(stack.procs)).start()
                elif phase == "drain" and sampler is not None:
                    snaps.append(self.cpu_snapshot())
                    counters.append(self.service_counters())
                    memory = sampler.stop()
                    sampler = None
                if msg.get("reason") == "overloaded":
                    log(f"  overloaded: {msg.get('backlog')} jobs unfinished; stopped adding")
                if phase == "done":
                    break
        finally:
            if sampler is not None:
                sampler.stop()
            driver.stop(timeout=5)
        return {"cpu": self.cpu_delta(*snaps) if len(snaps) == 2 else None,
                "counters": counters if len(counters) == 2 else None, "memory": memory}


def _fmt_pct(p: dict[str, Any] | None) -> str:
    return "n/a" if not p else f"p50 {p['p50']} ms / p99 {p['p99']} ms"


def add_cpu_per_job(result: dict[str, Any]) -> None:
    cpu = result.get("cpu")
    done = result["throughput"]["completed_in_window"]
    if not cpu or not done:
        return
    groups = cpu["by_group_s"]
    result["cpu_ms_per_job"] = {
        "system_under_test": round(groups.get("sut", 0) / done * 1000, 3),
        "postgres_and_redis": round(groups.get("services", 0) / done * 1000, 3),
        "fakes_and_driver": round(groups.get("harness", 0) / done * 1000, 3),
        "by_process": {k: round(v / done * 1000, 3) for k, v in cpu["by_process_s"].items()},
    }


# ----------------------------------------------------------------------------- analysis


@dataclass
class Probes:
    """The probe records of one scenario, indexed by job."""

    stage: dict[str, dict[str, tuple[float, float, Any]]]
    accept_by_job: dict[str, tuple[float, float]]  # job id -> (accept start, accept seconds)
    fake_first: dict[str, float]  # conversation id -> fake LLM's first delta sent
    sql: dict[str, Counter[str]]
    redis: dict[str, Counter[str]]

    @classmethod
    def index(cls, probes: list[list[Any]], t0: float, t1: float) -> Probes:
        out = cls(defaultdict(dict), {}, {}, defaultdict(Counter), defaultdict(Counter))
        for name, key, t_end, seconds, extra in probes:
            if name in ("sql", "redis"):
                # Counts, flushed every 0.25 s and stamped with the flush time.
                if t0 <= t_end < t1:
                    (out.sql if name == "sql" else out.redis)[str(extra)][key] += int(seconds)
            elif name == "bridge_accept" and isinstance(extra, list):
                out.accept_by_job.setdefault(extra[0], (extra[1], seconds))
            elif name == "fake_first_token":
                out.fake_first.setdefault(key, t_end)
            elif name in ("task_start", "task_run"):
                if extra == "vamu.notify.deliver":
                    name = "notify_" + name
                elif extra not in FEATURE_TASKS and not str(extra).isdigit():
                    continue  # other tasks (sweeps, reapers)
                out.stage[name].setdefault(key, (t_end, seconds, extra))
            elif key is not None:
                out.stage[name].setdefault(key, (t_end, seconds, extra))
        return out


def _completions(events: list[list[Any]], kind: str) -> tuple[dict[str, float], set[str],
                                                               dict[str, float], list[float]]:
    """Completion time per job id, failed ids, first chunk per conversation, all completions."""
    done_events = {"inspiration-ready", "ai-job-failed"} if kind == "inspiration" else {
        "chat-reply-ready", "ai-job-failed"}
    done_at: dict[str, float] = {}
    failed: set[str] = set()
    chunk0: dict[str, float] = {}
    completions: list[float] = []
    for event, job_id, seq, t, conversation in events:
        if event in done_events and job_id and job_id not in done_at:
            done_at[job_id] = t
            completions.append(t)
            if event == "ai-job-failed":
                failed.add(job_id)
        elif event == "chat-chunk" and seq == 0 and conversation and conversation not in chunk0:
            chunk0[conversation] = t
    return done_at, failed, chunk0, completions


def _job_latencies(lat: dict[str, list[float]], job_id: str, t_add: float, row: dict[str, Any],
                   recv: float | None, pr: Probes) -> None:
    st = pr.stage
    if recv is not None:
        lat["end_to_end"].append(recv - t_add)
    if row["finished"] and row["created"]:
        lat["row_created_to_finished"].append(float(row["finished"]) - float(row["created"]))
    start = st["task_start"].get(job_id)
    if start:
        lat["bridge_hop"].append(start[0] - t_add)
    accept = pr.accept_by_job.get(job_id)
    if accept:
        lat["bridge_pickup"].append(accept[0] - t_add)
        lat["bridge_accept"].append(accept[1])
    sent = st["celery_send"].get(job_id)
    if sent and start:
        lat["queue_wait"].append(start[0] - sent[0])
    for name in ("db_start", "context_fetch", "llm", "db_write", "llm_stream"):
        rec = st[name].get(job_id)
        if rec:
            lat[name].append(rec[1])
    run = st["task_run"].get(job_id)
    if run:
        lat["worker_task"].append(run[1])
    write, pub = st["db_write"].get(job_id), st["notify_publish"].get(job_id)
    if write and recv is not None:
        lat["notification"].append(recv - write[0])
    # From the start of the PUBLISH call: an asyncio caller resumes when the event loop gets
    # round to it, which can be after the client already has the event.
    if pub and recv is not None:
        lat["socketio_relay"].append(recv - (pub[0] - pub[1]))
    if write and pub:
        lat["notify_task_hop"].append(pub[0] - pub[1] - write[0])


def _chat_latencies(lat: dict[str, list[float]], job_id: str, chunk0: dict[str, float],
                    pr: Probes) -> None:
    emit = pr.stage["chunk_emit"].get(job_id)
    if not emit:
        return
    conversation = emit[2]
    first = pr.fake_first.get(conversation)
    client = chunk0.get(conversation)
    worker_delta = pr.stage["llm_first_delta"].get(job_id)
    if first is not None and client is not None:
        lat["first_chunk_after_first_token"].append(client - first)
    if first is not None and worker_delta is not None:
        lat["first_token_to_worker"].append(worker_delta[0] - first)
    # From the start of `ChunkSink.chunk` (XADD + EXPIRE, then PUBLISH): the worker thread may
    # get the GIL back after the client already has the chunk.
    sink_start = emit[0] - emit[1]
    if worker_delta is not None:
        lat["worker_delta_to_sink"].append(sink_start - worker_delta[0])
    if client is not None:
        lat["sink_to_client"].append(client - sink_start)


def analyse(data: dict[str, Any], rows: list[dict[str, Any]], probes: list[list[Any]], *,
            kind: str) -> dict[str, Any]:
    meta = data["meta"]
    t0, t1 = meta["measureAt"], meta["drainAt"]
    window = max(1e-9, t1 - t0)
    done_at, failed, chunk0, completions = _completions(data["events"], kind)
    added = {str(a[0]): a[1] for a in data["adds"]}
    by_ref = {r["source_ref"]: r for r in rows if r["source_ref"]}
    # Job id -> its add time and row, for the jobs added inside the measured window.
    in_window: dict[str, tuple[float, dict[str, Any]]] = {}
    for bull_id, t_add in added.items():
        row = by_ref.get(f"bullmq:vamu-ai:{bull_id}")
        if row is not None and t0 <= t_add < t1:
            in_window[str(row["id"])] = (t_add, row)
    pr = Probes.index(probes, t0, t1)
    lat: dict[str, list[float]] = defaultdict(list)
    for job_id, (t_add, row) in in_window.items():
        _job_latencies(lat, job_id, t_add, row, done_at.get(job_id), pr)
        # A job still unfinished when the driver gave up counts with the time it had waited
        # so far: percentiles over these are lower bounds, honest about an overload.
        lat["end_to_end_at_least"].append(done_at.get(job_id, meta["end"]) - t_add)
        if kind == "chat":
            _chat_latencies(lat, job_id, chunk0, pr)
    completed_in_window = sum(1 for t in completions if t0 <= t < t1)
    start_all = meta["start"]
    timeline_adds: Counter[int] = Counter(int(t - start_all) for t in added.values())
    timeline_done: Counter[int] = Counter(int(t - start_all) for t in completions)
    horizon = int(meta["end"] - start_all) + 1
    return {
        "throughput": {
            "window_s": round(window, 3),
            "adds_in_window": sum(1 for t in added.values() if t0 <= t < t1),
            "completed_in_window": completed_in_window,
            "jobs_per_s": round(completed_in_window / window, 2),
        },
        "counts": {"added": meta["added"], "completed": meta["completed"],
                   "unfinished": meta["unfinished"], "failed": len(failed),
                   "add_errors": meta["addErrors"], "window_jobs": len(in_window),
                   "window_statuses": dict(Counter(r["status"] for _, r in in_window.values()))},
        "sql_per_job": _per_job(pr.sql, completed_in_window),
        "redis_commands_per_job": _per_job(pr.redis, completed_in_window),
        "overloaded_at_s": (round(meta["overloadedAt"] - start_all, 2)
                            if meta.get("overloadedAt") else None),
        "latency_ms": {k: pct(v) for k, v in sorted(lat.items())},
        "e2e_quantiles_ms": quantile_curve(lat["end_to_end"]),
        "timeline": {"t0_s": round(t0 - start_all, 3), "t1_s": round(t1 - start_all, 3),
                     "adds_per_s": [timeline_adds.get(i, 0) for i in range(horizon)],
                     "done_per_s": [timeline_done.get(i, 0) for i in range(horizon)]},
    }


def _per_job(counts: dict[str, Counter[str]], jobs: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for role, c in sorted(counts.items()):
        row = {k: round(n / max(1, jobs), 2) for k, n in c.most_common()}
        out[role] = {"total": round(sum(c.values()) / max(1, jobs), 2), **row}
    return out


# ----------------------------------------------------------------------------- profile


# Operations of interest, by a function that appears in their stacks (inclusive share).
FOCUS = [
    ("Celery: consumer loop, message handling", "asynloop ("),
    ("Celery: task execution (all of the task)", "build_tracer.<locals>.trace_task"),
    ("Celery: task events to the broker", "EventDispatcher.send"),
    ("store: start_attempt", "SqlAlchemyJobStore.start_attempt"),
    ("store: succeed (result + outbox)", "SqlAlchemyJobStore.succeed"),
    ("store: get_job (all callers)", "SqlAlchemyJobStore.get_job"),
    ("  get_job from the cancel checkpoint", "cancel_checkpoint.<locals>.check"),
    ("  get_job from _count_outcome (metrics)", "_count_outcome"),
    ("store: pending_notifications", "SqlAlchemyJobStore.pending_notifications"),
    ("store: delivering (outbox row lock)", "SqlAlchemyJobStore.delivering"),
    ("store: find_job", "SqlAlchemyJobStore.find_job"),
    ("store: create_job", "SqlAlchemyJobStore.create_job"),
    ("SQLAlchemy pool pre-ping", "_do_ping"),
    ("NestJS API client (httpx2)", "HttpNestApiClient.get_context"),
    ("OpenAI SDK call", "OpenAIProvider.complete"),
    ("notifications after the commit (inline delivery)", "send_notifications"),
    ("Celery send_task (bridge)", "CelerySender.send"),
    ("Socket.IO emit (Redis PUBLISH)", "SocketIOTransport.send"),
    ("BullMQ worker: fetch next job", "Worker.getNextJob"),
    ("BullMQ worker: complete job", "moveToFinished"),
    ("logging", "Logger._log"),
]


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any] | None:
    """Top frames of a py-spy raw (collapsed) profile, skipping module imports at start-up."""
    if not path.exists():
        return None
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    focus: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any("_find_and_load" in f for f in frames):
            continue
        n = int(count)
        total += n
        for label, needle in FOCUS:
            if needle in stack:
                focus[label] += n
        names = [_frame_name(f) for f in frames]
        for name in set(names):
            inclusive[name] += n
        leaf[names[-1]] += n
        by_package[_package(frames[-1])] += n
    if not total:
        return None

    def share(c: Counter[str]) -> list[list[Any]]:
        return [[k, round(100 * v / total, 1)] for k, v in c.most_common(top)]

    return {"samples": total,
            "focus_pct": [[label, round(100 * focus[label] / total, 1)]
                          for label, _ in FOCUS if focus[label]],
            "inclusive_pct": share(inclusive), "self_pct": share(leaf),
            "leaf_package_pct": share(by_package)}


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _frame_name(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file")
    short = file
    for marker in ("site-packages/", "/vamu_tasks/", "/workers/", "/bench/"):
        if marker in file:
            short = (marker.strip("/") + "/" if marker != "site-packages/" else "") + \
                file.split(marker, 1)[1]
            break
    else:
        short = file.rsplit("/", 1)[-1]
    return f"{m.group('func')} ({short})"


def _package(frame: str) -> str:
    m = _FRAME.match(frame)
    file = m.group("file") if m else frame
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    for name in ("vamu_tasks", "workers", "bench"):
        if f"/{name}/" in file:
            return name
    stem = file.rsplit("/", 1)[-1].removesuffix(".py")
    parent = file.rsplit("/", 2)[-2] if file.count("/") >= 2 else ""
    if parent and parent not in ("lib", "python3.11"):
        return f"stdlib:{parent}"
    return f"stdlib:{stem}"


# ----------------------------------------------------------------------------- calibration


def calibrate(bench: Bench, seconds: float) -> dict[str, Any]:
    """Each fake alone: requests a second from 8 client threads, and the fake's CPU per request."""
    out: dict[str, Any] = {}
    for kind, url, name in (("llm", bench.llm_url, "fake-llm"), ("api", bench.api_url, "fake-api")):
        proc = next(p for p in bench.procs if p.name == name)
        before = cpu_seconds(psutil.Process(proc.pid))
        t = time.time()
        done = subprocess.run(
            [PY, str(BENCH / "loadgen.py"), "--url", url, "--kind", kind, "--threads", "8",
             "--seconds", str(seconds), "--token", API_TOKEN],
            capture_output=True, text=True, timeout=seconds + 60, cwd=bench.rundir)
        wall = time.time() - t
        used = cpu_seconds(psutil.Process(proc.pid)) - before
        if done.returncode != 0:
            raise RuntimeError(f"loadgen failed: {done.stderr[-2000:]}")
        stats = json.loads(done.stdout.strip().splitlines()[-1])
        stats["server_cpu_ms_per_request"] = round(used / max(1, stats["requests"]) * 1000, 3)
        stats["server_cpu_busy_pct"] = round(100 * used / wall, 1)
        out[name] = stats
        log(f"{name} alone: {stats['rps']} req/s from 8 threads, "
            f"{stats['server_cpu_ms_per_request']} ms server CPU a request")
    return out


# ----------------------------------------------------------------------------- plan


@dataclass
class Plan:
    zero_cap: dict[str, Any]
    zero_open: dict[str, Any]
    zero_sustain: dict[str, Any]  # open loop at half the measured capacity
    hop: dict[str, Any]
    lat1: dict[str, Any]
    lat5: dict[str, Any] | None
    chat: dict[str, Any]
    scaling: list[int]
    scale: dict[str, Any]
    profile: dict[str, Any]
    calibrate_s: float
    baseline_latency: bool


FULL = Plan(
    zero_cap=dict(mode="closed", in_flight=64, warmup=3, duration=15, drain=20),
    # Stops adding once 2000 jobs are unfinished: a system that cannot keep up shows it within
    # seconds, and waiting for a backlog of thousands would only measure the backlog.
    zero_open=dict(mode="open", rate=400, warmup=1, duration=60, drain=10, max_backlog=2000),
    zero_sustain=dict(mode="open", warmup=2, duration=20, drain=20),
    hop=dict(mode="open", rate=100, warmup=3, duration=20, drain=20),
    lat1=dict(mode="closed", in_flight=200, warmup=3, duration=30, drain=15, latency=1.0),
    lat5=dict(mode="closed", in_flight=200, warmup=6, duration=40, drain=15, latency=5.0),
    # A rate the stack carries with CPU to spare: the target is about streaming latency.
    chat=dict(kind="chat", mode="open", rate=4, warmup=2, duration=20, drain=15),
    scaling=[1, 2, 4],
    scale=dict(mode="closed", in_flight=64, warmup=3, duration=15, drain=20),
    profile=dict(mode="closed", in_flight=64, warmup=3, duration=15, drain=20),
    calibrate_s=5,
    baseline_latency=True,
)
QUICK = Plan(
    zero_cap=dict(mode="closed", in_flight=16, warmup=0.3, duration=1.5, drain=10),
    zero_open=dict(mode="open", rate=40, warmup=0.3, duration=1.5, drain=10, max_backlog=2000),
    zero_sustain=dict(mode="open", warmup=0.3, duration=1, drain=10),
    hop=dict(mode="open", rate=20, warmup=0.3, duration=1, drain=10),
    lat1=dict(mode="closed", in_flight=20, warmup=0.3, duration=1.5, drain=5, latency=0.2),
    lat5=None,
    chat=dict(kind="chat", mode="open", rate=5, warmup=0.3, duration=1, drain=10),
    scaling=[1, 2],
    scale=dict(mode="closed", in_flight=16, warmup=0.3, duration=1.5, drain=10),
    profile=dict(mode="closed", in_flight=16, warmup=0.3, duration=3, drain=10),
    calibrate_s=1,
    baseline_latency=False,
)
SCENARIO_GROUPS = ("calibrate", "zero", "hop", "latency", "chat", "scaling", "whatif",
                   "profile")


class Suite:
    """Which scenarios run on which system, in what order."""

    def __init__(self, bench: Bench, plan: Plan, only: set[str], profile: bool) -> None:
        self.bench = bench
        self.plan = plan
        self.only = only
        self.profile = profile
        self.results: dict[str, Any] = {"scenarios": {}}
        self.sc: dict[str, Any] = self.results["scenarios"]
        lat = [("lat1", plan.lat1)] + ([("lat5", plan.lat5)] if plan.lat5 else [])
        self.latency_plans: list[tuple[str, dict[str, Any]]] = lat

    @contextlib.contextmanager
    def stack(self, kind: str, **kw: Any) -> Iterator[Stack]:
        s = Stack(self.bench, kind, **kw)
        try:
            s.start()
            self.bench.prime(s)
            yield s
        finally:
            s.stop()

    def run(self) -> dict[str, Any]:
        if "calibrate" in self.only:
            self.results["calibration"] = calibrate(self.bench, self.plan.calibrate_s)
        if self.only & {"zero", "hop", "latency", "chat", "scaling"}:
            self.vamu()
        if self.only & {"zero", "latency"}:
            self.baseline_a()
            self.baseline_b()
        if "scaling" in self.only:
            self.scaling()
        if "whatif" in self.only and not self.bench.quick:
            self.whatif()
        if self.profile and "profile" in self.only:
            self.profile_run()
        return self.results

    def vamu(self) -> None:
        b, p, only, sc = self.bench, self.plan, self.only, self.sc
        with self.stack("vamu", workers=1) as s:
            if only & {"zero", "scaling"}:
                sc["zero_capacity/vamu"] = b.scenario(s, "zero_capacity-vamu", **p.zero_cap)
            if "zero" in only:
                sc["zero_open/vamu"] = b.scenario(s, "zero_open-vamu", **p.zero_open)
                self.sustain(s, "vamu")
            if "hop" in only:
                sc["hop/vamu"] = b.scenario(s, "hop-vamu", **p.hop)
            if "latency" in only:
                for key, lp in self.latency_plans:
                    sc[f"{key}/vamu"] = b.scenario(s, f"{key}-vamu", **lp)
            if "chat" in only:
                sc["chat/vamu"] = b.scenario(s, "chat-vamu", **p.chat)

    def sustain(self, s: Stack, system: str) -> None:
        """Open loop at half the capacity just measured: latency at a load it can carry."""
        cap = self.sc.get(f"zero_capacity/{system}", {}).get("throughput", {}).get("jobs_per_s")
        if cap:
            rate = max(5, round(0.5 * cap))
            self.sc[f"zero_sustain/{system}"] = self.bench.scenario(
                s, f"zero_sustain-{system}", rate=rate, **self.plan.zero_sustain)

    def baseline_a(self) -> None:
        b, p, sc = self.bench, self.plan, self.sc
        with self.stack("bullmq-python") as s:
            if "zero" in self.only:
                sc["zero_capacity/bullmq-python"] = b.scenario(s, "zero_capacity-a", **p.zero_cap)
                sc["zero_open/bullmq-python"] = b.scenario(s, "zero_open-a", **p.zero_open)
                self.sustain(s, "bullmq-python")
            if "latency" in self.only and p.baseline_latency:
                for key, lp in self.latency_plans:
                    sc[f"{key}/bullmq-python"] = b.scenario(s, f"{key}-a", **lp)

    def baseline_b(self) -> None:
        b, p, sc = self.bench, self.plan, self.sc
        with self.stack("celery-defaults") as s:
            if "zero" in self.only:
                sc["zero_capacity/celery-defaults"] = b.scenario(
                    s, "zero_capacity-b", **p.zero_cap)
            if "latency" in self.only:
                for key, lp in self.latency_plans:
                    # Two processes for 200 jobs in flight: the queue cannot drain in any
                    # reasonable time, so the window is shorter and the stack is restarted.
                    short = {**lp, "duration": min(lp["duration"], 20), "drain": 0}
                    sc[f"{key}/celery-defaults"] = b.scenario(s, f"{key}-b", **short)

    def scaling(self) -> None:
        for n in self.plan.scaling:
            if n == 1 and "zero_capacity/vamu" in self.sc:
                self.sc["scaling/1"] = self.sc["zero_capacity/vamu"]
                continue
            # PostgreSQL allows 100 connections: keep the LLM workers' pools ~20 in all.
            with self.stack("vamu", workers=n, pool_size=max(3, -(-10 // n))) as s:
                self.sc[f"scaling/{n}"] = self.bench.scenario(s, f"scaling-{n}", **self.plan.scale)

    def whatif(self) -> None:
        """The default stack with one setting changed, at the same offered load as
        zero_sustain/vamu: VAMU_BRIDGE_CONCURRENCY (and the sync queue's) back at the old
        default, 50. While one slot of a bullmq-python Worker blocks waiting for a job, every
        other idle slot runs the moveToActive script and comes back empty, so at a low rate each
        job cost the bridge about a hundred Lua scripts (see docs/performance.md, "Profile")."""
        base = self.sc.get("zero_sustain/vamu")
        if not base:
            return
        env = {"VAMU_BRIDGE_CONCURRENCY": "50", "VAMU_BRIDGE_SYNC_CONCURRENCY": "50"}
        plan = {**self.plan.zero_sustain, "rate": base["params"]["rate"]}
        with self.stack("vamu", workers=1, env=env) as s:
            result = self.bench.scenario(s, "whatif-bridge50", **plan)
        result["label"] += ", VAMU_BRIDGE_CONCURRENCY=50"
        self.sc["whatif_bridge50/vamu"] = result

    def profile_run(self) -> None:
        with self.stack("vamu", workers=1, profile=True) as s:
            self.sc["profile_run/vamu"] = self.bench.scenario(s, "profile-vamu",
                                                              **self.plan.profile)
        self.results["profile"] = {name: summarize_profile(path)
                                   for name, path in s.profiles.items()}


# ----------------------------------------------------------------------------- targets


def _lat(sc: dict[str, Any], key: str, name: str, q: str) -> float | None:
    p = sc.get(key, {}).get("latency_ms", {}).get(name)
    return p[q] if p else None


def _target(tid: str, what: str, target: str, measured: Any, ok: bool | None,
            note: str = "") -> dict[str, Any]:
    return {"id": tid, "what": what, "target": target, "measured": measured, "pass": ok,
            "note": note}


def _zero_targets(sc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    zo = sc.get("zero_open/vamu")
    sus = sc.get("zero_sustain/vamu")
    sus_note = ""
    if sus:
        sus_note = (f"at {sus['params']['rate']} jobs/s offered (half the capacity): "
                    f"{sus['throughput']['jobs_per_s']} jobs/s, p99 "
                    f"{_lat(sc, 'zero_sustain/vamu', 'end_to_end', 'p99')} ms")
    if zo:
        rate = zo["params"]["rate"]
        tput = zo["throughput"]["jobs_per_s"]
        sustained = zo["overloaded_at_s"] is None and zo["counts"]["unfinished"] == 0
        note = "sustained" if sustained else (
            f"not sustained: {zo['params']['maxBacklog']} jobs unfinished after "
            f"{zo['overloaded_at_s']} s" if zo["overloaded_at_s"] else "jobs left unfinished")
        yield _target("1a", f"zero-latency LLM, {rate} jobs/s offered for "
                      f"{zo['params']['durationS']} s", f">= {rate} jobs/s sustained", tput,
                      tput >= 0.99 * rate and sustained, note)
        p99 = _lat(sc, "zero_open/vamu", "end_to_end", "p99")
        measured: Any = p99
        if zo["counts"]["unfinished"]:
            # The jobs at the back of the backlog never finished: a lower bound is all there is.
            measured = f">= {_lat(sc, 'zero_open/vamu', 'end_to_end_at_least', 'p99')}"
            sus_note = (f"{zo['counts']['unfinished']} jobs unfinished when the driver stopped "
                        f"waiting; " + sus_note)
        yield _target("1b", "p99 job time (Queue.add → inspiration-ready at the client)",
                      "<= 25 ms", measured,
                      p99 is not None and p99 <= 25 and not zo["counts"]["unfinished"],
                      sus_note)
    cap_v = sc.get("zero_capacity/vamu", {}).get("throughput", {}).get("jobs_per_s")
    cap_a = sc.get("zero_capacity/bullmq-python", {}).get("throughput", {}).get("jobs_per_s")
    if cap_v and cap_a:
        ratio = round(cap_v / cap_a, 2)
        yield _target("1c", "zero-latency capacity vs baseline (a), saturated", ">= 1.0x",
                      ratio, ratio >= 1.0, f"{cap_v} vs {cap_a} jobs/s")


def _latency_targets(sc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key, tid in (("lat1", "2a"), ("lat5", "2b")):
        s = sc.get(f"{key}/vamu")
        if not s:
            continue
        latency = s["params"]["llmLatencyS"]
        ideal = s["params"]["inFlight"] / latency
        eff = round(s["throughput"]["jobs_per_s"] / ideal, 3)
        note = (f"{s['throughput']['jobs_per_s']} of {ideal:g} jobs/s; peak RSS "
                f"{s['memory'].get('peak_rss_mb_total')} MB")
        for other, name in (("celery-defaults", "(b)"), ("bullmq-python", "(a)")):
            o = sc.get(f"{key}/{other}")
            if o:
                note += (f"; {name} {o['throughput']['jobs_per_s']} jobs/s = "
                         f"{round(o['throughput']['jobs_per_s'] / ideal, 3)} of ideal, "
                         f"{o['memory'].get('peak_rss_mb_total')} MB")
        yield _target(tid, f"LLM latency {latency:g} s, {s['params']['inFlight']} in flight: "
                      "throughput / ideal", ">= 0.95", eff, eff >= 0.95, note)


def _other_targets(sc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "hop/vamu" in sc:
        p50, p99 = _lat(sc, "hop/vamu", "bridge_hop", "p50"), _lat(sc, "hop/vamu",
                                                                   "bridge_hop", "p99")
        rate = sc["hop/vamu"]["params"]["rate"]
        note = ""
        if "zero_sustain/vamu" in sc:
            note = (f"at {sc['zero_sustain/vamu']['params']['rate']} jobs/s: "
                    f"p50 {_lat(sc, 'zero_sustain/vamu', 'bridge_hop', 'p50')} ms, "
                    f"p99 {_lat(sc, 'zero_sustain/vamu', 'bridge_hop', 'p99')} ms")
        yield _target("3a", f"bridge hop p50 at {rate} jobs/s (Queue.add → Celery task start)",
                      "<= 5 ms", p50, p50 is not None and p50 <= 5, note)
        yield _target("3b", f"bridge hop p99 at {rate} jobs/s", "<= 25 ms", p99,
                      p99 is not None and p99 <= 25)
    if "chat/vamu" in sc:
        p50 = _lat(sc, "chat/vamu", "first_chunk_after_first_token", "p50")
        p99 = _lat(sc, "chat/vamu", "first_chunk_after_first_token", "p99")
        yield _target("4", "first chat-chunk at the client after the fake LLM's first token "
                      "(p50)", "<= 20 ms", p50, p50 is not None and p50 <= 20, f"p99 {p99} ms")
    scaling = {k.split("/")[1]: v["throughput"]["jobs_per_s"] for k, v in sc.items()
               if k.startswith("scaling/")}
    if scaling:
        yield _target("5", "throughput with 1, 2, 4 LLM worker processes (zero latency, "
                      "saturated)", "reported", scaling, None)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    sc = results["scenarios"]
    return [*_zero_targets(sc), *_latency_targets(sc), *_other_targets(sc)]


def markdown(results: dict[str, Any]) -> str:
    """The figures tables, as pasted into docs/performance.md."""
    sc = results["scenarios"]
    out = ["| # | what | target | measured | met | note |", "|---|---|---|---|---|---|"]
    for t in results["targets"]:
        ok = {True: "yes", False: "**no**", None: "—"}[t["pass"]]
        measured = t["measured"]
        if isinstance(measured, dict):
            measured = ", ".join(f"{k}: {v}" for k, v in measured.items())
        out.append(f"| {t['id']} | {t['what']} | {t['target']} | {measured} | {ok} | {t['note']} |")
    out += ["", "| scenario | system | jobs/s | e2e p50 / p99 ms | CPU ms/job (SUT · PG+Redis · "
            "fakes+driver) | peak RSS MB | machine busy % | other load CPU s |",
            "|---|---|---|---|---|---|---|---|"]
    for key, s in sc.items():
        e2e = s["latency_ms"].get("end_to_end")
        if s["counts"]["unfinished"] and s["latency_ms"].get("end_to_end_at_least"):
            low = s["latency_ms"]["end_to_end_at_least"]
            e2e = {"p50": f"≥ {low['p50']}", "p99": f"≥ {low['p99']}"}
        cpu = s.get("cpu_ms_per_job") or {}
        c = s.get("cpu") or {}
        out.append(
            f"| {key.split('/')[0]} | {s['label']} | {s['throughput']['jobs_per_s']} | "
            f"{(str(e2e['p50']) + ' / ' + str(e2e['p99'])) if e2e else 'n/a'} | "
            f"{cpu.get('system_under_test', 'n/a')} · {cpu.get('postgres_and_redis', 'n/a')} · "
            f"{cpu.get('fakes_and_driver', 'n/a')} | "
            f"{s['memory'].get('peak_rss_mb_total', 'n/a')} | "
            f"{c.get('machine_busy_pct', 'n/a')} | {c.get('other_s', 'n/a')} |")
    stages = ["bridge_hop", "bridge_pickup", "bridge_accept", "queue_wait", "db_start",
              "context_fetch", "llm", "db_write", "notify_task_hop", "socketio_relay",
              "notification", "end_to_end"]
    out += ["", "Per-stage latency, p50 / p99 ms:", "",
            "| scenario | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
    for key, s in sc.items():
        if key.startswith(("scaling/", "profile")):
            continue
        cells = []
        for st in stages:
            p = s["latency_ms"].get(st)
            cells.append(f"{p['p50']} / {p['p99']}" if p else "—")
        out.append(f"| {key} | " + " | ".join(cells) + " |")
    out += _chat_table(sc) + _calls_table(sc)
    return "\n".join(out) + "\n"


def _chat_table(sc: dict[str, Any]) -> list[str]:
    chat = sc.get("chat/vamu")
    if not chat:
        return []
    stages = ["first_token_to_worker", "worker_delta_to_sink", "sink_to_client",
              "first_chunk_after_first_token"]
    cells = []
    for st in stages:
        p = chat["latency_ms"].get(st)
        cells.append(f"{p['p50']} / {p['p99']}" if p else "—")
    return ["", "Chat streaming, first chunk, p50 / p99 ms:", "",
            "| " + " | ".join(stages) + " |", "|---" * len(stages) + "|",
            "| " + " | ".join(cells) + " |"]


def _calls_table(sc: dict[str, Any]) -> list[str]:
    out = ["", "Round trips per job (probes; PostgreSQL transactions from pg_stat_database):", "",
           "| scenario | SQL statements + commits + checkouts, by process | Redis commands, by "
           "process | PostgreSQL transactions |", "|---|---|---|---|"]
    for key in ("zero_capacity/vamu", "zero_capacity/bullmq-python",
                "zero_capacity/celery-defaults", "zero_sustain/vamu", "whatif_bridge50/vamu",
                "zero_sustain/bullmq-python"):
        s = sc.get(key)
        if not s:
            continue
        sql = ", ".join(f"{role} {v['total']}" for role, v in s.get("sql_per_job", {}).items())
        red = ", ".join(f"{role} {v['total']}"
                        for role, v in s.get("redis_commands_per_job", {}).items())
        xact = s.get("postgres_per_job", {}).get("xact_commit", "n/a")
        out.append(f"| {key} | {sql or '—'} | {red or '—'} | {xact} |")
    return out


# ----------------------------------------------------------------------------- main


def versions(bench: Bench) -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {"python": platform.python_version()}
    for pkg in ("celery", "kombu", "bullmq", "redis", "openai", "httpx2", "SQLAlchemy", "psycopg"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    with contextlib.suppress(Exception):
        out["node"] = subprocess.run([bench.node or "node", "--version"], capture_output=True,
                                     text=True, timeout=10).stdout.strip()
        pkg = json.loads((NODE_DIR / "node_modules" / "bullmq" / "package.json").read_text())
        out["node_bullmq"] = pkg["version"]
    with contextlib.suppress(Exception):
        out["redis_server"] = bench.redis.info("server")["redis_version"]
    with contextlib.suppress(Exception):
        assert bench.engine is not None
        with bench.engine.connect() as conn:
            out["postgresql"] = conn.execute(sa.text("SHOW server_version")).scalar()
    return out


def git_rev() -> str:
    with contextlib.suppress(Exception):
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="every scenario for a moment (~1.5 min): proves the bench works")
    parser.add_argument("--only", default=",".join(SCENARIO_GROUPS),
                        help=f"comma list of scenario groups: {', '.join(SCENARIO_GROUPS)}")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile run")
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--probe-off", action="store_true",
                        help="no stage probes (no per-stage figures): to check what they cost")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples a second")
    parser.add_argument("--results", default=str(BENCH / "results"))
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SCENARIO_GROUPS)
    if unknown:
        parser.error(f"unknown scenario groups: {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    profile = not args.no_profile and not args.quick
    bench = Bench(args)
    started = time.time()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    status = 0
    results: dict[str, Any] = {}
    try:
        log(f"run directory {bench.rundir} ({'quick' if args.quick else 'full'} mode)")
        bench.start_services()
        results = Suite(bench, plan, only, profile).run()
        results["targets"] = targets(results)
    except KeyboardInterrupt:
        log("interrupted: stopping every process this run started")
        status = 130
    except Exception:
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        bench.stop_all()
        with contextlib.suppress(Exception):
            bench.cleanup_redis()
        meta = {
            "timestamp": stamp, "mode": "quick" if args.quick else "full",
            "duration_s": round(time.time() - started, 1), "git": git_rev(),
            "machine": {"cpus": psutil.cpu_count(), "memory_gb": round(
                psutil.virtual_memory().total / 2**30, 1), "platform": platform.platform(),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
            "versions": versions(bench),
            "config": {"llm_concurrency": LLM_CONCURRENCY, "users": USERS,
                       "notify": "socketio", "quota": "off"},
            "run_dir": str(bench.rundir),
        }
        with contextlib.suppress(Exception):
            bench.exit.close()
        if not args.keep and status == 0:
            shutil.rmtree(bench.rundir, ignore_errors=True)
    if status != 0:
        log(f"failed; logs kept in {bench.rundir}")
        return status
    results = {"meta": meta, **results}
    path = results_dir / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    md_text = markdown(results)
    (results_dir / f"{stamp}.md").write_text(md_text)
    try:
        sys.path.insert(0, str(BENCH))
        from plots import make_plots

        pngs = make_plots(results, results_dir, stamp)
    except Exception:
        import traceback

        traceback.print_exc()
        log("plots failed")
        return 1
    print(md_text)
    log(f"results: {path}")
    for png in pngs:
        log(f"plot: {png}")
    log(f"done in {meta['duration_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
