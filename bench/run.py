#!/usr/bin/env python3
"""`make bench`: jobs through the real path, side by side with what a team would otherwise run.

    Node BullMQ producer ─▶ bridge ─▶ Celery workers ─▶ fake NestJS API ─▶ fake LLM ─▶
    PostgreSQL ─▶ notify worker ─▶ Redis ─▶ Socket.IO server (redis-adapter) ─▶ socket.io-client

Usage:
    .venv/bin/python bench/run.py            # full run (~12 min): docs/performance.md's figures
    .venv/bin/python bench/run.py --quick    # every scenario for a moment (~1.5 min), for CI
    .venv/bin/python bench/run.py --only zero,chat --no-profile
    .venv/bin/python bench/run.py --quick --only zero,whatif   # the what-ifs, for a moment

Writes bench/results/<timestamp>.json, <timestamp>.md (the figures table) and
<timestamp>-*.png, and prints the table. Exit status 0 when every scenario ran (a missed
target is a result, not an error), 1 when the harness itself failed.

Systems, all against the same fakes, PostgreSQL and Redis, one at a time, in one run:
- vamu: `python -m workers.bridge`, N x `python -m workers.llm` (threads pool), one
  `python -m workers.notify` — the documented deployment, with the settings docker-compose and
  the README give (VAMU_NOTIFY=socketio,log, the per-user quota on, every other setting at its
  default); the jobs go round robin over thousands of users, so the quota refuses none (the run
  fails if it refuses any). The settings the bench used before (quota off, 250 LLM threads,
  Socket.IO only) are a what-if;
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
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from harness import (
    BASELINE_CONCURRENCY,
    BENCH,
    DEFAULT_QUOTA_PER_HOUR,
    NODE_DIR,
    REPO,
    TUNED_SETTINGS,
    USERS,
    log,
)
from report import markdown, targets
from scenarios import Bench
from suite import FULL, NOT_IN_QUICK, QUICK, SCENARIO_GROUPS, Suite

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
    parser.add_argument("--only", default=None,
                        help=f"comma list of scenario groups: {', '.join(SCENARIO_GROUPS)} "
                        f"(default: all; with --quick, all but {', '.join(NOT_IN_QUICK)})")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile run")
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--probe-off", action="store_true",
                        help="no stage probes (no per-stage figures): to check what they cost")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples a second")
    parser.add_argument("--results", default=str(BENCH / "results"))
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    args = parser.parse_args(argv)
    if args.only is None:
        groups = [g for g in SCENARIO_GROUPS if not (args.quick and g in NOT_IN_QUICK)]
        args.only = ",".join(groups)
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
            "config": {"vamu": "defaults (VAMU_NOTIFY=socketio,log; every other setting at "
                               "its default)",
                       "users": len(USERS), "quota_per_user_per_hour": DEFAULT_QUOTA_PER_HOUR,
                       "baseline_a_concurrency": BASELINE_CONCURRENCY,
                       "baseline_b": "VAMU_QUOTA_JOBS_PER_USER_PER_HOUR=0, VAMU_NOTIFY=socketio",
                       "whatif_tuned": TUNED_SETTINGS},
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
