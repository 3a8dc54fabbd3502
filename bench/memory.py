#!/usr/bin/env python3
"""The memory of the default process shape (issue 16, goal 5): RSS of each process, idle and
under load.

    .venv/bin/python bench/memory.py              # LLM latency 1 s, 200 in flight for 8 s
    .venv/bin/python bench/memory.py --repeat 3   # three fresh starts, one table each
    .venv/bin/python bench/memory.py --env MALLOC_ARENA_MAX=2   # a what-if
    .venv/bin/python bench/memory.py --env VAMU_LLM_CONCURRENCY=250 --latency 1 --in-flight 250

Starts `python -m workers.bridge`, `python -m workers.llm` and `python -m workers.notify` as
docker-compose.yml configures them (Redis broker, PostgreSQL, VAMU_NOTIFY=socketio,log, each with
its /metrics port, the per-user quota on, every other setting at its default), against a
PostgreSQL database of its own (migrated, dropped at the end), Redis database `--redis-db` with
keys of its own (deleted at the end), the OpenAI provider on the package's wire-faithful fake LLM
(bench/fake_llm.py) and the fake NestJS API. Then:

- idle: RSS (and USS, PSS) of each process tree `--settle` seconds after all three are ready
  (by default past the first housekeeping pass of the batch tier, a minute after start);
- load: bench/driver.js (a BullMQ producer plus Socket.IO clients, as NestJS would be) keeps
  `--in-flight` inspiration jobs between `Queue.add` and their `inspiration-ready` event for
  `--seconds`, the fake LLM answering after `--latency` s; the peak RSS of each tree and of
  the sum is sampled every 0.1 s until the last job's event arrives; then RSS, USS and PSS
  once more (`after`).

Prints a table per start; with `--json PATH` also writes the figures. Every process it starts is
stopped by its PID (SIGTERM, then SIGKILL of that tree after 20 s).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import redis
from harness import BENCH, NODE_DIR, PY, REPO, Proc, stop_all, temporary_database

from vamu_tasks.context.samples import SAMPLE_USERS
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.testing.fake_api import FakeNestApi

MB = 1024 * 1024
ROLES = ("bridge", "llm", "notify")
# Enough users that the default quota (120 jobs per user per hour) refuses none of the jobs.
USERS = [f"u-mem-{i:03d}" for i in range(100)]
API_TOKEN = "bench-api-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Run:
    """One start of the three processes, with the fakes and the data they need."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.tag = f"vm{uuid.uuid4().hex[:6]}"
        self.workdir = workdir
        self.redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
        self.procs: dict[str, Proc] = {}
        self.harness: list[Proc] = []
        self.api: FakeNestApi | None = None

    def spawn(self, name: str, argv: list[str], env: dict[str, str], *,
              pipes: bool = False) -> Proc:
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "ab") as logf:
            popen = subprocess.Popen(
                argv, env=env, cwd=self.workdir, start_new_session=True,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else logf, stderr=logf, text=pipes)
        return Proc(name, "harness", popen, log_path)

    def start_fakes(self) -> tuple[str, str]:
        env = {**os.environ, "VAMU_BENCH_PROBE_DIR": str(self.workdir)}
        llm = self.spawn("fake-llm", [PY, str(BENCH / "fake_llm.py"), "--port", "0"], env)
        self.harness.append(llm)
        # In this process: the fake API with USERS (its command line serves the 4 samples).
        ada = SAMPLE_USERS["u-ada"]
        users = {u: {**copy.deepcopy(ada), "userId": u} for u in USERS}
        self.api = FakeNestApi(users=users, token=API_TOKEN).start()
        llm_url, api_url = llm.url(), self.api.url
        body = json.dumps({"latency": self.args.latency}).encode()
        import urllib.request

        req = urllib.request.Request(llm_url + "/_fake/config", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as response:
            response.read()
        return llm_url, api_url

    def env(self, pg_url: str, llm_url: str, api_url: str) -> dict[str, str]:
        # Only what docker-compose.yml and .env would set; everything else at its default.
        drop = ("VAMU_", "OPENAI_", "ANTHROPIC_", "PROMETHEUS_", "MALLOC_", "OTEL_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.update({
            "PYTHONUNBUFFERED": "1",
            "VAMU_DATA_DIR": str(self.workdir / "data"),
            "VAMU_BROKER_URL": self.redis_url,
            "VAMU_BROKER_KEY_PREFIX": f"{self.tag}:",
            "VAMU_DATABASE_URL": pg_url,
            "VAMU_REDIS_URL": self.redis_url,
            "VAMU_NOTIFY": "socketio,log",
            "VAMU_API_BASE_URL": api_url,
            "VAMU_API_TOKEN": API_TOKEN,
            "VAMU_LLM_PROVIDER": "openai",
            "OPENAI_API_KEY": "sk-memory-bench-not-a-key",
            "OPENAI_BASE_URL": llm_url + "/v1",
            # Key names of this run only (so its keys can be deleted), not other settings.
            "VAMU_SOCKETIO_KEY": f"{self.tag}-sio",
            "VAMU_BULLMQ_PREFIX": f"{self.tag}-bull",
            "VAMU_QUOTA_KEY_PREFIX": f"{self.tag}:quota",
            "VAMU_METRICS_ADDRESS": "127.0.0.1",
        })
        for item in self.args.env:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    def start_workers(self, env: dict[str, str]) -> None:
        (self.workdir / "data").mkdir(exist_ok=True)
        ready = {"bridge": "bridge ready", "llm": " ready.", "notify": " ready."}
        for role in ROLES:
            argv = [PY, "-m", f"workers.{role}"]
            if role != "bridge":
                argv += ["--hostname", f"{role}-{self.tag}@%h"]
            role_env = {**env, "VAMU_METRICS_PORT": str(free_port())}
            # The workers package lives in the repository, as in the image's /src.
            paths = [str(REPO), env.get("PYTHONPATH", "")]
            role_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
            self.procs[role] = self.spawn(role, argv, role_env)
        for role in ROLES:
            self.procs[role].wait_log(ready[role])

    def stop(self) -> None:
        stop_all([*self.procs.values(), *reversed(self.harness)], timeout=20)
        if self.api is not None:
            self.api.stop()

    def delete_keys(self) -> int:
        r = redis.Redis.from_url(self.redis_url)
        keys = list(r.scan_iter(match=f"*{self.tag}*", count=2000))
        for i in range(0, len(keys), 1000):
            r.delete(*keys[i:i + 1000])
        r.close()
        return len(keys)


def tree(proc: Proc) -> list[psutil.Process]:
    return proc.tree()


def snapshot(procs: dict[str, Proc], full: bool = True) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for role, proc in procs.items():
        rss = uss = pss = 0
        threads = 0
        for p in tree(proc):
            with contextlib.suppress(psutil.Error):
                if full:
                    info = p.memory_full_info()
                    rss += info.rss
                    uss += info.uss
                    pss += getattr(info, "pss", 0)
                else:
                    rss += p.memory_info().rss
                threads += p.num_threads()
        out[role] = {"rss": rss / MB, "uss": uss / MB, "pss": pss / MB, "threads": threads,
                     "processes": len(tree(proc))}
    return out


class PeakSampler:
    def __init__(self, procs: dict[str, Proc], interval: float = 0.1) -> None:
        self.procs = procs
        self.interval = interval
        self.peak: dict[str, float] = dict.fromkeys(procs, 0.0)
        self.peak_threads: dict[str, int] = dict.fromkeys(procs, 0)
        self.peak_total = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            snap = snapshot(self.procs, full=False)
            for role, row in snap.items():
                self.peak[role] = max(self.peak[role], row["rss"])
                self.peak_threads[role] = max(self.peak_threads[role], int(row["threads"]))
            self.peak_total = max(self.peak_total, sum(row["rss"] for row in snap.values()))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def drive(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    node = shutil.which("node")
    if not node or not (NODE_DIR / "node_modules" / "bullmq").is_dir():
        raise RuntimeError("node and tests/e2e/node/node_modules are needed: `make node-deps`")
    out = run.workdir / "driver.json"
    spec = {
        "redis": run.redis_url, "prefix": f"{run.tag}-bull", "queue": "vamu-ai",
        "socketioKey": f"{run.tag}-sio", "users": USERS, "kind": "inspiration",
        "tag": run.tag, "mode": "closed", "inFlight": args.in_flight, "warmupS": 0,
        "durationS": args.seconds, "drainS": 60, "maxBacklog": 100_000, "out": str(out),
    }
    env = {**os.environ, "BENCH_NODE_MODULES": str(NODE_DIR / "node_modules")}
    driver = run.spawn("driver", [node, str(BENCH / "driver.js")], env, pipes=True)
    run.harness.append(driver)
    assert driver.popen.stdin is not None and driver.popen.stdout is not None
    driver.popen.stdin.write(json.dumps(spec) + "\n")
    driver.popen.stdin.close()
    done: dict[str, Any] = {}
    for line in driver.popen.stdout:
        msg = json.loads(line)
        if msg.get("phase") == "done":
            done = msg
            break
    driver.wait(30)
    if not done:
        raise RuntimeError(f"driver failed:\n{driver.log_text()[-3000:]}")
    data = json.loads(out.read_text())
    failed = sum(1 for e in data["events"] if e[0] == "ai-job-failed")
    return {"added": done["added"], "completed": done["completed"],
            "unfinished": done["unfinished"], "failed": failed,
            "seconds": round(done["end"] - done["start"], 1)}


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="vamu-mem-")
    with temporary_database() as pg_url:
        upgrade(pg_url)
        run = Run(args, Path(tmp))
        try:
            llm_url, api_url = run.start_fakes()
            run.start_workers(run.env(pg_url, llm_url, api_url))
            time.sleep(args.settle)
            idle = snapshot(run.procs)
            with PeakSampler(run.procs) as sampler:
                load = drive(run, args)
            time.sleep(1.0)
            after = snapshot(run.procs)
        finally:
            run.stop()
            deleted = run.delete_keys()
            if args.keep:
                print(f"logs in {tmp}", flush=True)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    return {"env": args.env, "idle": idle, "after": after,
            "peak": sampler.peak, "peak_threads": sampler.peak_threads,
            "peak_total": sampler.peak_total, "load": load, "redis_keys_deleted": deleted}


def table(result: dict[str, Any]) -> str:
    idle, after, peak = result["idle"], result["after"], result["peak"]
    rows = ["| process | idle RSS | idle USS | idle PSS | threads idle/peak | peak RSS | "
            "after-load RSS | after USS | after PSS |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for role in ROLES:
        i, a = idle[role], after[role]
        rows.append(f"| {role} | {i['rss']:.1f} | {i['uss']:.1f} | {i['pss']:.1f} | "
                    f"{int(i['threads'])}/{result['peak_threads'][role]} | {peak[role]:.1f} | "
                    f"{a['rss']:.1f} | {a['uss']:.1f} | {a['pss']:.1f} |")

    def total(snap: dict[str, dict[str, float]], key: str) -> float:
        return sum(row[key] for row in snap.values())

    rows.append(f"| **sum** | {total(idle, 'rss'):.1f} | {total(idle, 'uss'):.1f} | "
                f"{total(idle, 'pss'):.1f} | | **{result['peak_total']:.1f}** | "
                f"{total(after, 'rss'):.1f} | {total(after, 'uss'):.1f} | "
                f"{total(after, 'pss'):.1f} |")
    load = result["load"]
    rows.append(f"\nMB. Load: {load['completed']} of {load['added']} jobs done in "
                f"{load['seconds']} s ({load['failed']} failed, {load['unfinished']} unfinished); "
                f"settings: {' '.join(result['env']) or 'defaults'}.")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/memory.py", description=__doc__.split("\n")[0])
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=8.0, help="how long jobs are added")
    parser.add_argument("--latency", type=float, default=1.0, help="fake LLM latency (s)")
    # Past the housekeeping leader's first batch pass (VAMU_BATCH_POLL_INTERVAL_S, 60 s): a
    # pass can load what start-up did not, and idle must be the steady state, not the start.
    parser.add_argument("--settle", type=float, default=65.0, help="idle wait after ready (s)")
    # Not 11/12 (the tests') nor 14 (bench/run.py's); only this run's keys are deleted anyway.
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the three processes (what-ifs)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the logs (path printed)")
    args = parser.parse_args()
    results = []
    for n in range(args.repeat):
        result = one_run(args)
        results.append(result)
        print(f"\n## start {n + 1} of {args.repeat}\n\n{table(result)}", flush=True)
    if args.repeat > 1:
        peaks = sorted(r["peak_total"] for r in results)
        idles = sorted(sum(row["rss"] for row in r["idle"].values()) for r in results)
        print(f"\npeak RSS sum: median {peaks[len(peaks) // 2]:.1f} MB "
              f"(min {peaks[0]:.1f}, max {peaks[-1]:.1f}); idle RSS sum: median "
              f"{idles[len(idles) // 2]:.1f} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
