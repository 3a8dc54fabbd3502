#!/usr/bin/env python3
"""The database work of one job, alone: what each change to the hot path saves.

    .venv/bin/python bench/hot_path.py [--jobs 2000]

Runs, in this process and against a PostgreSQL database of its own (dropped at the end), the
store calls a job makes on its normal path, in the order the processes make them:

- bridge: `accept_job` with the per-user quota at its default (a real Redis counter), and a
  task sender that sends nothing;
- LLM worker: `start_attempt` (with a lease owner), `succeed` with one notification, and the
  inline delivery of that notification (`deliver_fresh`, with a transport that sends nothing);

and reports, per job: statements sent, PostgreSQL transactions (pg_stat_database), this
process's CPU, and the CPU of the PostgreSQL backends that served it. No Celery, no HTTP: the
figures are the store's alone, so they move only when the store's code does. docs/performance.md
gives them before and after each change.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
import redis
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import temporary_database

from vamu_tasks.bridge.quota import RedisHourlyQuota
from vamu_tasks.bridge.service import accept_job
from vamu_tasks.domain import Notification, Spend, Usage
from vamu_tasks.features import FeatureSpec
from vamu_tasks.notify import service as notify_service
from vamu_tasks.settings import Settings
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.store.repository import SqlAlchemyJobStore


class NoSend:
    """A task sender that sends nothing: the figures are the database's, not the broker's."""

    def send(
        self,
        spec: FeatureSpec,
        job_id: uuid.UUID,
        headers: Any = None,
        *,
        provider: str | None = None,
        model: str | None = None,
    ) -> str:
        return str(job_id)


class Silent:
    """A transport that sends nothing: the figures are the outbox's, not a transport's."""

    def send(self, notification: Notification) -> None:
        return None


def backends(engine: sa.Engine) -> list[psutil.Process]:
    with engine.connect() as conn:
        pids = (
            conn.execute(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
            )
            .scalars()
            .all()
        )
    return [psutil.Process(pid) for pid in pids]


def cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def count_statements(engine: sa.Engine, count: Callable[[], None]) -> None:
    """Call `count` for each statement this process sends: SQLAlchemy's, and the job path's
    sent straight to psycopg (store/direct.py), which SQLAlchemy's events do not see."""
    sa.event.listen(engine, "before_cursor_execute", lambda *_: count())
    try:
        from vamu_tasks.store.direct import DirectConnection
    except ImportError:  # the code before they were
        return
    execute = DirectConnection.execute

    def _direct(self: Any, statement: Any, parameters: Any) -> Any:
        count()
        return execute(self, statement, parameters)

    DirectConnection.execute = _direct  # type: ignore[method-assign]


@dataclass(frozen=True)
class Window:
    transactions: int
    client_cpu_s: float
    postgres_cpu_s: float
    wall_s: float


def measure(store: SqlAlchemyJobStore, admin: sa.Engine, work: Callable[[], None]) -> Window:
    """`work`'s PostgreSQL transactions, this process's CPU, its backends' CPU and wall time.

    A backend sends its transaction counts to pg_stat_database when it exits, or when idle for
    up to 10 s: the pool is emptied before and after `work`, so the count holds its alone. The
    backends `work` uses are new, so their CPU is all its."""
    store.db.engine.dispose()
    time.sleep(0.3)
    x0, c0, t0 = xacts(admin), time.process_time(), time.perf_counter()
    work()
    wall = time.perf_counter() - t0
    c1, b1 = time.process_time(), cpu(backends(admin))
    store.close()
    time.sleep(0.3)
    return Window(xacts(admin) - x0, c1 - c0, b1, wall)


def xacts(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        return int(
            conn.execute(
                sa.text(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                    "WHERE datname = current_database()"
                )
            ).scalar_one()
        )


def run(url: str, jobs: int, redis_url: str) -> dict[str, Any]:
    store = SqlAlchemyJobStore.from_url(url, transports=["socketio"])
    prefix = f"vamu-hot-path-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    quota = RedisHourlyQuota(client, limit=Settings().quota_jobs_per_user_per_hour, prefix=prefix)
    statements: Counter[str] = Counter()
    stage = ["warmup"]

    def _count() -> None:
        statements[stage[0]] += 1

    count_statements(store.db.engine, _count)

    transports = {"socketio": Silent()}
    spend = Spend(
        provider="openai",
        model="gpt-5-mini",
        usage=Usage(input_tokens=500, output_tokens=200),
        cost_usd=Decimal("0.0003"),
    )
    admin = sa.create_engine(url)

    def one(n: int, measured: bool) -> None:
        stage[0] = "bridge" if measured else "warmup"
        accepted = accept_job(
            store,
            NoSend(),
            quota,
            name="inspiration.generate",
            data={"userId": f"u-{n % 500}", "count": 3},
            queue="vamu-ai",
            bullmq_job_id=str(n),
        )
        stage[0] = "llm" if measured else "warmup"
        started = store.start_attempt(accepted.job_id, f"host:1:{n}", 60.0)
        note = Notification(
            uuid.uuid4(),
            "inspiration-ready",
            started.user_id,
            started.id,
            {"jobId": str(started.id), "status": "succeeded"},
        )
        store.succeed(started.id, {"ideas": [{"title": "x"}]}, spend, [note])
        if hasattr(notify_service, "deliver_fresh"):
            left = notify_service.deliver_fresh(store, transports, [note], only={"socketio"})
            assert not left, left
        else:  # the code before issue 16's changes, for the before/after figures
            report = notify_service.deliver(store, transports, note.id, only={"socketio"})
            assert report.complete, report

    for n in range(50):  # the pool's connections, the statement caches
        one(n, measured=False)

    def measured() -> None:
        for n in range(50, 50 + jobs):
            one(n, measured=True)

    window = measure(store, admin, measured)
    admin.dispose()
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    return {
        "jobs": jobs,
        "quota_per_user_per_hour": quota.limit,
        "statements_per_job": {
            k: round(v / jobs, 2) for k, v in statements.items() if k != "warmup"
        },
        "pg_transactions_per_job": round(window.transactions / jobs, 2),
        "client_cpu_ms_per_job": round(window.client_cpu_s / jobs * 1000, 3),
        "postgres_cpu_ms_per_job": round(window.postgres_cpu_s / jobs * 1000, 3),
        "wall_ms_per_job": round(window.wall_s / jobs * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/14",
        help="the Redis database of the quota counters (keys deleted at the end)",
    )
    args = parser.parse_args()
    with temporary_database() as url:
        upgrade(url)
        print(json.dumps(run(url, args.jobs, args.redis), indent=1))


if __name__ == "__main__":
    main()
