"""`vamu-tasks demo`: real inspiration jobs through a real Celery worker, on embedded defaults.

Embedded means: a `filesystem://` broker and SQLite in a temporary directory, the offline LLM,
the bundled sample users and log notifications. Nothing else has to run, and no key is needed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

DEMO_JOBS: list[dict[str, Any]] = [
    {"userId": "u-ada", "count": 3},
    {"userId": "u-bruno", "count": 2, "hint": "something outdoors, cheap"},
    {"userId": "u-nobody", "count": 1},  # not a known user: shows a failed row
]


def demo_environment(data_dir: Path) -> dict[str, str]:
    return {
        "VAMU_DATA_DIR": str(data_dir),
        "VAMU_BROKER_URL": "filesystem://",
        "VAMU_DATABASE_URL": f"sqlite:///{data_dir / 'vamu.db'}",
        "VAMU_API_BASE_URL": "",
        "VAMU_LLM_PROVIDER": "offline",
        "VAMU_LLM_FALLBACK": "",
        "VAMU_NOTIFY": "log",
        "VAMU_LLM_CONCURRENCY": "8",
    }


def _start_worker(data_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log_path = data_dir / "worker.log"
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "vamu_tasks",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                "8",
                "--queues",
                "inspiration,notify",
                "--hostname",
                "demo@%h",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env={**os.environ, **env},
            cwd=data_dir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def run_demo(*, keep: bool = False) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="vamu-demo-"))
    env = demo_environment(data_dir)
    # Before anything reads Settings or the Celery config, so this process uses them too; and
    # from the data dir, so a developer's .env cannot override the embedded defaults.
    os.environ.update(env)
    os.chdir(data_dir)
    try:
        return _run(data_dir, env)
    finally:
        if keep:
            click.echo(f"data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def _run(data_dir: Path, env: dict[str, str]) -> int:
    from vamu_tasks.app import app
    from vamu_tasks.cli import _store, job_as_dict, wait_for_job
    from vamu_tasks.errors import VamuError
    from vamu_tasks.sender import CelerySender
    from vamu_tasks.settings import Settings
    from vamu_tasks.store.migrate import upgrade
    from vamu_tasks.submit import submit_job

    settings = Settings()
    click.secho(f"vamu-tasks demo: embedded defaults in {data_dir}", bold=True)
    upgrade(settings.effective_database_url)
    click.echo("  migrated SQLite; starting a Celery worker (threads pool, filesystem broker)")
    worker = _start_worker(data_dir, env)
    store = _store(settings)
    try:
        sender = CelerySender(app)
        job_ids = []
        for data in [*DEMO_JOBS, {"userId": "u-ada", "count": 42}]:
            try:
                job, _ = submit_job(store, sender, "inspiration", data, source="cli")
            except VamuError as exc:
                click.echo(f"  refused {data}: {exc.error_kind}: {exc.message}")
                continue
            click.echo(f"  enqueued {job.id} for {data['userId']}")
            job_ids.append(job.id)
        started = time.monotonic()
        finished = [wait_for_job(store, jid, timeout_s=60, echo=False) for jid in job_ids]
        click.echo(f"  {len(finished)} jobs ended in {time.monotonic() - started:.1f}s\n")
        for job in finished:
            _print_job(job_as_dict(job))
        _wait_for_notifications(store, [job.id for job in finished])
        log_lines = (data_dir / "worker.log").read_text(errors="replace").splitlines()
        click.secho("Notifications (log transport):", bold=True)
        for line in log_lines:
            if "] notification " in line:
                click.echo(f"  {line.split('] notification ', 1)[1]}")
        return 0 if all(job.is_terminal for job in finished) else 1
    finally:
        store.close()
        _stop(worker)


def _wait_for_notifications(store: Any, job_ids: list[Any], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(store.pending_notifications(jid) for jid in job_ids):
        if time.monotonic() > deadline:
            click.echo("  (some notifications are still pending)")
            return
        time.sleep(0.1)


def _print_job(row: dict[str, Any]) -> None:
    click.secho(f"job {row['id']}  user {row['userId']}  {row['status']}", bold=True)
    click.echo(
        f"  attempts={row['attempts']} provider={row['provider']} model={row['model']} "
        f"tokens={row['inputTokens']}/{row['outputTokens']} cost_usd={row['costUsd']}"
    )
    if row["result"]:
        for idea in row["result"]["ideas"]:
            click.echo(f"  • {idea['title']} [{idea['category']}] — {idea['description']}")
    else:
        click.echo(f"  error: {row['errorKind']}: {row['errorMessage']}")
    click.echo("")
