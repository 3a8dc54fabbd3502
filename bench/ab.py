#!/usr/bin/env python3
"""Compare settings of the default vamu stack side by side, at saturation, in one run.

    .venv/bin/python bench/ab.py '{}' '{"VAMU_TASK_EVENTS": "true"}' [--rounds 2] [--seconds 12]
    .venv/bin/python bench/ab.py '{}' '{"workers": 2}' --latency 1 --in-flight 100 --seconds 20

Each argument is a JSON object of `VAMU_*` settings laid over the defaults (`{}` is the
defaults as `make bench` runs them); `workers` is the number of `workers.llm` processes (1 by
default; with more, each gets a database pool of 5). For each round, each variant gets a fresh
stack (bridge, LLM worker, notify worker), a few seconds of priming, then a closed loop of 64
jobs in flight with a zero-latency LLM (or `--latency` seconds). It prints, per variant and
round, the jobs per second, the job time, the peak RSS and the CPU per job of each process;
with `--idle S`, also each process's CPU per second over S idle seconds before the load. The
variants alternate within a round, so a busy neighbour on the machine shows in both: compare
rounds, not one figure. docs/performance.md gives what each setting changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenarios import Bench
from stack import Stack


def idle_cpu(bench: Bench, seconds: float) -> dict[str, float]:
    """Milliseconds of CPU each process uses per second with no job in the system."""
    time.sleep(3)  # the last primed jobs' notifications and leases settle
    before = bench.cpu_snapshot()
    time.sleep(seconds)
    delta = bench.cpu_delta(before, bench.cpu_snapshot())
    return {name: round(cpu / delta["wall_s"] * 1000, 2)
            for name, cpu in delta["by_process_s"].items()
            if name in ("bridge", "llm1", "notify", "postgres", "redis-server")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="JSON objects of VAMU_* settings")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.0, help="the fake LLM's latency, s")
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--idle", type=float, default=0.0,
                        help="also measure each process's CPU over this many idle seconds")
    args = parser.parse_args()
    variants = [json.loads(v) for v in args.variants]
    bench = Bench(argparse.Namespace(quick=False, redis_db=args.redis_db, probe_off=False,
                                     profile_rate=100, keep=False))
    rows = []
    try:
        bench.start_services()
        for round_ in range(1, args.rounds + 1):
            for variant in variants:
                env = {k: str(v) for k, v in variant.items() if k != "workers"}
                workers = int(variant.get("workers", 1))
                stack = Stack(bench, "vamu", env=env, workers=workers,
                              pool_size=10 if workers == 1 else 5)
                try:
                    stack.start()
                    bench.prime(stack)
                    idle = idle_cpu(bench, args.idle) if args.idle else None
                    result = bench.scenario(stack, f"ab-{round_}", mode="closed",
                                            in_flight=args.in_flight, warmup=2,
                                            latency=args.latency,
                                            duration=args.seconds, drain=20, quiet=True)
                finally:
                    stack.stop()
                cpu = result.get("cpu_ms_per_job", {})
                row = {
                    "round": round_,
                    "settings": variant,
                    "jobs_per_s": result["throughput"]["jobs_per_s"],
                    "job_time_p50_p99_ms": [result["latency_ms"]["end_to_end"][q]
                                            for q in ("p50", "p99")],
                    "peak_rss_mb": result["memory"].get("peak_rss_mb_total"),
                    "vamu_cpu_ms_per_job": cpu.get("system_under_test"),
                    "by_process_ms": {k: v for k, v in cpu.get("by_process", {}).items()
                                      if k in ("bridge", "notify", "postgres", "redis-server")
                               or k.startswith("llm")},
                }
                if idle is not None:
                    row["idle_ms_per_s"] = idle
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        bench.stop_all()
        bench.cleanup_redis()
        bench.exit.close()
        shutil.rmtree(bench.rundir, ignore_errors=True)


if __name__ == "__main__":
    main()
