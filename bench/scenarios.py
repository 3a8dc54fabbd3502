"""The bench's scenarios: `Bench` runs one system through load, latency and chat scenarios,
and `calibrate` measures the machine."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import redis
import sqlalchemy as sa
from analysis import analyse
from harness import (
    API_TOKEN,
    BENCH,
    LLM_KEY,
    NODE_DIR,
    PY,
    REDIS_BASE,
    USERS,
    Proc,
    RssSampler,
    cpu_seconds,
    log,
    stop_all,
    temporary_database,
)
from stack import Stack

from vamu_tasks.store.migrate import upgrade

# The driver's socket.io-clients: each joins the rooms of a slice of the users.
DRIVER_CLIENTS = 4
# The unmeasured jobs every new stack runs first, in seconds.
PRIME_S = {"full": 3.0, "quick": 0.5}

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
            # docker-compose's default: the app hears of jobs over Socket.IO, and they are logged.
            "VAMU_NOTIFY": "socketio,log",
            "VAMU_SOCKETIO_KEY": self.sio_key,
            "VAMU_BULLMQ_QUEUE": "vamu-ai",
            "VAMU_BULLMQ_PREFIX": f"{prefix}-bull",
            # The quota stays on at its default; its counters live under the stack's prefix, so
            # each stack starts from zero and they are deleted with the stack's keys.
            "VAMU_QUOTA_KEY_PREFIX": f"{prefix}:quota",
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
                          "--token", API_TOKEN, "--users", str(len(USERS))])
        self.llm_url = llm.url()
        self.api_url = api.url()
        log(f"fake LLM {self.llm_url}, fake API {self.api_url}, database {self.pg_url}")

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
                # sessions: connections opened (PostgreSQL 14+), so pool churn shows per job.
                "tup_updated, tup_deleted, sessions FROM pg_stat_database "
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

    def refusals(self, stack: Stack, rows: list[dict[str, Any]]) -> dict[str, int]:
        """Jobs refused or failed in the last scenario, by kind: the BullMQ jobs the bridge
        failed (by the kind its `failedReason` starts with, e.g. `quota_exceeded`: a refused
        job has no row) and the job rows by `error_kind`."""
        out: Counter[str] = Counter()
        for row in rows:
            if row["error_kind"]:
                out[str(row["error_kind"])] += 1
        bull = f"{stack.prefix}-bull:vamu-ai"
        for raw in self.redis.zrange(f"{bull}:failed", 0, -1):
            job_id = raw.decode()
            if f"{bull}:{job_id}" in stack.failed_seen:
                continue
            stack.failed_seen.add(f"{bull}:{job_id}")
            reason = (self.redis.hget(f"{bull}:{job_id}", "failedReason") or b"").decode()
            out[reason.split(":", 1)[0] or "unknown"] += 1
        return dict(out)

    def prime(self, stack: Stack) -> None:
        """A few seconds of jobs nobody measures: the first jobs of a process pay for lazy
        imports (the SDKs), client and pool set-up; in production a worker is long-lived."""
        self.scenario(stack, f"prime-{stack.prefix}", mode="closed", in_flight=8, warmup=0,
                      duration=PRIME_S["quick" if self.quick else "full"], drain=30,
                      quiet=True)
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
            "socketioKey": self.sio_key, "users": USERS, "userOffset": stack.jobs_added,
            "clients": DRIVER_CLIENTS, "kind": kind, "tag": f"{self.tag}{name}",
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
        stack.jobs_added += int(data["meta"]["added"])
        rows = self.fetch_rows()
        refusals = self.refusals(stack, rows)
        result = analyse(data, rows, self.read_probes(), kind=kind)
        result["refusals"] = refusals
        result["max_jobs_per_user"] = -(-stack.jobs_added // len(USERS))
        result.update({"system": stack.kind, "label": stack.label, "workers": stack.workers,
                       "params": params, "cpu": window["cpu"], "memory": window["memory"]})
        add_cpu_per_job(result)
        if window["counters"]:
            result["postgres_per_job"] = self.counters_per_job(
                *window["counters"], result["throughput"]["completed_in_window"])
        if kind == "chat":
            self.chat_job_ids.extend(str(r["id"]) for r in rows)
        stack.dirty = data["meta"]["unfinished"] > 0
        if refusals.get("quota_exceeded") or refusals.get("quota"):
            raise RuntimeError(
                f"scenario {name}: the per-user quota refused jobs ({refusals}); the bench must "
                f"spread its jobs over more users (now {len(USERS)}, up to "
                f"{result['max_jobs_per_user']} jobs each on this stack)")
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
