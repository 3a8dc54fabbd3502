#!/usr/bin/env python3
"""The bridge's Celery publish of one job, alone: what each change to the send path saves.

    .venv/bin/python bench/send_path.py [--sends 5000] [--threads 1] [--profile 25]

Runs, in this process, `CelerySender.send` (what the bridge calls for every job it accepts)
against the real Redis broker: Redis database 13 under a key prefix of its own (every key
deleted at the end), the settings otherwise the defaults, a job's trace headers included. It
reports, per send: this process's CPU (`time.process_time`), the Redis commands it sent
(counted as redis-py packs them) and the wall time, and checks that every message is in its
queue. `--threads N` sends from N threads at once, as the bridge's executor does; `--profile N`
also prints cProfile's N most expensive functions (cumulative) over a second pass. No database,
no BullMQ: the figures are the publish's alone, so they move only when the send path does.
docs/performance.md gives them before and after each change.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
import redis.connection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REDIS_URL = "redis://127.0.0.1:6379/13"

commands: Counter[str] = Counter()


def count_commands() -> None:
    """Count every command redis-py packs in this process, pipelines included."""
    for cls in (redis.connection.PythonRespSerializer, redis.connection.HiredisRespSerializer):
        pack = cls.pack

        def counted(self: Any, *args: Any, _pack: Any = pack) -> Any:
            name = args[0]
            commands[name.decode() if isinstance(name, bytes) else str(name)] += 1
            return _pack(self, *args)

        cls.pack = counted  # type: ignore[method-assign]


def run(sends: int, threads: int, profile: int, prefix: str) -> dict[str, Any]:
    # Before the app reads its configuration: Celery reads celeryconfig on first use.
    os.environ["VAMU_BROKER_URL"] = REDIS_URL
    os.environ["VAMU_BROKER_KEY_PREFIX"] = prefix
    from vamu_tasks.app import app
    from vamu_tasks.features import FEATURES
    from vamu_tasks.sender import CelerySender

    spec = FEATURES["inspiration"]
    sender = CelerySender(app)
    headers = {
        "requestId": "req-0123456789abcdef",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }

    try:
        return measure(sender, spec, headers, sends, threads, profile, prefix)
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def measure(
    sender: Any,
    spec: Any,
    headers: dict[str, str],
    sends: int,
    threads: int,
    profile: int,
    prefix: str,
) -> dict[str, Any]:
    def send_many(n: int) -> None:
        for _ in range(n):
            sender.send(spec, uuid.uuid4(), headers)

    def measured(n: int) -> None:
        if threads == 1:
            send_many(n)
            return
        with ThreadPoolExecutor(threads, thread_name_prefix="send") as pool:
            for f in [pool.submit(send_many, n // threads) for _ in range(threads)]:
                f.result()

    warmup = max(100, threads * 50)
    measured(warmup)  # connections, pools, declarations, caches
    count_commands()
    commands.clear()
    c0, t0 = time.process_time(), time.perf_counter()
    measured(sends)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    sent = sum(commands.values())
    per_command = {k: round(v / sends, 2) for k, v in commands.most_common()}

    top = ""
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        send_many(sends)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(profile)
        top = out.getvalue()

    client = redis.Redis.from_url(REDIS_URL)
    queued = int(client.llen(f"{prefix}{spec.queue}"))
    client.close()
    expected = warmup + sends + (sends if profile else 0)
    if queued != expected:
        raise SystemExit(f"{queued} messages queued, {expected} sent")
    if top:
        print(top, file=sys.stderr)
    return {
        "sends": sends,
        "threads": threads,
        "cpu_ms_per_send": round(cpu / sends * 1000, 4),
        "redis_commands_per_send": round(sent / sends, 2),
        "redis_commands": per_command,
        "wall_ms_per_send": round(wall / sends * 1000, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1, help="senders at once (the bridge's)")
    parser.add_argument("--profile", type=int, default=0, help="print the top N of cProfile")
    args = parser.parse_args()
    prefix = f"vamu-send-path-{uuid.uuid4().hex[:8]}:"
    result = run(args.sends, args.threads, args.profile, prefix)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
