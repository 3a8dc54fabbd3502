"""`vamu-tasks`: the operators' command line (database, enqueueing, job inspection, demo)."""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from vamu_tasks.cli_batch import (
    BATCH_HELP,
    DELIVER_BY_HELP,
    batch_deadline,
    batch_policy_or_exit,
    duration_s,
)
from vamu_tasks.cli_spend import spend
from vamu_tasks.dev import DevOptions
from vamu_tasks.domain import JobFilter, JobRecord
from vamu_tasks.errors import VamuError
from vamu_tasks.settings import Settings
from vamu_tasks.store.repository import SqlAlchemyJobStore

DEV_DEFAULTS = DevOptions()


def _store(settings: Settings) -> SqlAlchemyJobStore:
    return SqlAlchemyJobStore.from_url(settings.effective_database_url, transports=settings.notify)


def job_as_dict(job: JobRecord) -> dict[str, Any]:
    return {
        "id": str(job.id),
        "feature": job.feature,
        "userId": job.user_id,
        "status": job.status,
        "attempts": job.attempts,
        "errorKind": job.error_kind,
        "errorMessage": job.error_message,
        "provider": job.provider,
        "model": job.model,
        "inputTokens": job.input_tokens,
        "outputTokens": job.output_tokens,
        "cacheReadTokens": job.cache_read_tokens,
        "cacheWriteTokens": job.cache_write_tokens,
        "costUsd": str(job.cost_usd) if job.cost_usd is not None else None,
        "source": job.source,
        "sourceRef": job.source_ref,
        "createdAt": job.created_at.isoformat() if job.created_at else None,
        "startedAt": job.started_at.isoformat() if job.started_at else None,
        "finishedAt": job.finished_at.isoformat() if job.finished_at else None,
        "rerunOf": str(job.rerun_of) if job.rerun_of else None,
        "deliverBy": job.deliver_by.isoformat() if job.deliver_by else None,
        "batchId": str(job.batch_id) if job.batch_id else None,
        "request": dict(job.request),
        "result": dict(job.result) if job.result is not None else None,
    }


def wait_for_job(
    store: SqlAlchemyJobStore, job_id: uuid.UUID, *, timeout_s: float, echo: bool = True
) -> JobRecord:
    """Poll the row (the source of truth) until the job ends or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    last_status = None
    while True:
        job = store.get_job(job_id)
        if job is None:
            raise click.ClickException(f"Job {job_id} does not exist.")
        if echo and job.status != last_status:
            click.echo(f"  {job.id} {job.status} (attempt {job.attempts})", err=True)
            last_status = job.status
        if job.is_terminal or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


@click.group()
def main() -> None:
    """Operate vamu-tasks: migrate the database, enqueue jobs, inspect them."""


@main.group()
def db() -> None:
    """Database schema (Alembic migrations shipped in the package)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the migrations to VAMU_DATABASE_URL."""
    from vamu_tasks.store.migrate import DatabaseNotReady, check_connection, upgrade

    settings = Settings()
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        check_connection(settings.effective_database_url)
    except DatabaseNotReady as exc:
        # One line naming the fix; the driver's traceback would run to 140 lines.
        click.echo(f"vamu-tasks: {exc}", err=True)
        sys.exit(1)
    upgrade(settings.effective_database_url, revision)
    click.echo(f"database at revision {revision}")


@main.group()
def enqueue() -> None:
    """Create a job (source `cli`) and send its task."""


@enqueue.command("inspiration")
@click.option("--user-id", required=True)
@click.option("--count", type=int, default=None, help="Ideas to generate (1-10, default 3).")
@click.option("--hint", default=None, help="Free text to steer the ideas (up to 500 chars).")
@click.option("--locale", default=None)
@click.option("--batch", is_flag=True, help=BATCH_HELP)
@click.option("--deliver-by", default=None, help=DELIVER_BY_HELP)
@click.option("--wait", is_flag=True, help="Follow the job to its end and print the result.")
@click.option("--timeout", type=float, default=300.0, show_default=True)
def enqueue_inspiration(
    user_id: str,
    count: int | None,
    hint: str | None,
    locale: str | None,
    batch: bool,
    deliver_by: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """Ask for event ideas for a user."""
    data: dict[str, Any] = {"userId": user_id, "count": count, "hint": hint, "locale": locale}
    when = batch_deadline(batch, deliver_by)
    if when is not None:
        data["deliverBy"] = when.isoformat().replace("+00:00", "Z")
    _enqueue(
        "inspiration",
        {k: v for k, v in data.items() if v is not None},
        wait,
        timeout,
        batch=when is not None,
    )


@enqueue.command("chatbot")
@click.option("--user-id", required=True)
@click.option("--conversation-id", required=True)
@click.option("--message", required=True, help="The user's message (up to 4000 chars).")
@click.option("--wait", is_flag=True, help="Print the reply as it streams, then the job's end.")
@click.option("--timeout", type=float, default=300.0, show_default=True)
def enqueue_chatbot(
    user_id: str, conversation_id: str, message: str, wait: bool, timeout: float
) -> None:
    """Send a user's chat message and get the assistant's reply."""
    data = {"userId": user_id, "conversationId": conversation_id, "message": message}
    _enqueue("chatbot", data, wait, timeout, follow=_follow_chat_stream)


@enqueue.command("agent")
@click.option("--user-id", required=True)
@click.option("--goal", required=True, help="What the agent should work toward (2000 chars).")
@click.option("--wait", is_flag=True, help="Follow the run to its end and print the result.")
@click.option("--timeout", type=float, default=300.0, show_default=True)
def enqueue_agent(user_id: str, goal: str, wait: bool, timeout: float) -> None:
    """Start a tool-using agent run toward a user's goal."""
    _enqueue("agent", {"userId": user_id, "goal": goal}, wait, timeout)


def _follow_chat_stream(
    settings: Settings, job_id: uuid.UUID, store: SqlAlchemyJobStore, timeout: float
) -> None:
    """Print chunks from the job's Redis Stream as they arrive (needs Socket.IO notify)."""
    from vamu_tasks import redis_clients
    from vamu_tasks.notify.chunks import stream_key

    if "socketio" not in settings.notify:
        return
    client = redis_clients.app_redis(settings, decode_responses=True)
    last_id, deadline, ended = "0-0", time.monotonic() + timeout, False
    try:
        while time.monotonic() < deadline:
            answer: Any = client.xread({stream_key(job_id): last_id}, block=200, count=100) or []
            for _key, entries in answer:
                for entry_id, fields in entries:
                    last_id = entry_id
                    if fields.get("event") == "chat-restart":
                        click.echo(f"\n[attempt {fields.get('attempt')}: starting over]\n")
                    elif fields.get("event") == "chat-chunk":
                        click.echo(fields.get("delta", ""), nl=False)
            if ended and not answer:
                break
            job = store.get_job(job_id)
            ended = job is None or job.is_terminal
        click.echo("")
    finally:
        client.close()


def _enqueue(
    feature: Any,
    data: dict[str, Any],
    wait: bool,
    timeout: float,
    follow: Any = None,
    *,
    batch: bool = False,
) -> None:
    from vamu_tasks.app import app
    from vamu_tasks.sender import CelerySender
    from vamu_tasks.submit import submit_job

    settings = Settings()
    policy = batch_policy_or_exit(settings) if batch else None
    store = _store(settings)
    try:
        try:
            job, task_id = submit_job(
                store, CelerySender(app), feature, data, source="cli", batch=policy
            )
        except VamuError as exc:
            raise click.ClickException(f"{exc.error_kind}: {exc.message}") from exc
        accepted: dict[str, Any] = {"jobId": str(job.id), "celeryTaskId": task_id}
        if batch:
            # `batched`, or `queued` when deliverBy is too near to wait for a batch.
            accepted["status"] = job.status
        click.echo(json.dumps(accepted))
        if not wait:
            return
        deadline = time.monotonic() + timeout
        if follow is not None:
            follow(settings, job.id, store, timeout)
        # One --timeout for following the stream and waiting for the row together.
        job = wait_for_job(store, job.id, timeout_s=max(0.0, deadline - time.monotonic()))
        if job.status == "succeeded":
            click.echo(json.dumps(job.result, indent=2, ensure_ascii=False))
            return
        if not job.is_terminal:
            click.echo(f"still {job.status} after {timeout:.0f}s", err=True)
            sys.exit(2)
        click.echo(f"{job.status}: {job.error_kind}: {job.error_message}", err=True)
        sys.exit(1)
    finally:
        store.close()


@main.group()
def jobs() -> None:
    """Inspect job rows."""


@jobs.command("show")
@click.argument("job_id", type=click.UUID)
def jobs_show(job_id: uuid.UUID) -> None:
    """Print one job row as JSON."""
    store = _store(Settings())
    try:
        job = store.get_job(job_id)
    finally:
        store.close()
    if job is None:
        raise click.ClickException(f"Job {job_id} does not exist.")
    click.echo(json.dumps(job_as_dict(job), indent=2, ensure_ascii=False))


def parse_when(value: str | None) -> datetime | None:
    """`24h`, `30m`, `7d` ago, or an ISO-8601 time (UTC when it has no zone)."""
    if value is None:
        return None
    seconds = duration_s(value)
    if seconds is not None:
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither like 24h/30m/7d nor ISO-8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def job_filters(func: Any) -> Any:
    options = [
        click.option(
            "--status",
            type=click.Choice(["queued", "batched", "running", "succeeded", "failed", "cancelled"]),
        ),
        click.option("--feature", type=click.Choice(["inspiration", "chatbot", "agent"])),
        click.option("--error-kind", default=None),
        click.option("--since", default=None, help="e.g. 24h, 30m, 7d, or an ISO time"),
        click.option("--until", default=None, help="ISO time (or 2h for two hours ago)"),
        click.option("--limit", type=int, default=100, show_default=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_filter(
    ids: tuple[uuid.UUID, ...],
    status: Any,
    feature: Any,
    error_kind: str | None,
    since: str | None,
    until: str | None,
    limit: int,
) -> JobFilter:
    return JobFilter(
        ids=ids,
        status=status,
        feature=feature,
        error_kind=error_kind,
        since=parse_when(since),
        until=parse_when(until),
        limit=limit,
    )


@jobs.command("list")
@job_filters
def jobs_list(
    status: Any,
    feature: Any,
    error_kind: str | None,
    since: str | None,
    until: str | None,
    limit: int,
) -> None:
    """List jobs, newest first, as a table."""
    store = _store(Settings())
    try:
        found = store.list_jobs(build_filter((), status, feature, error_kind, since, until, limit))
    finally:
        store.close()
    click.echo(
        f"{'id':36}  {'feature':11}  {'status':9}  {'error kind':14}  {'user':16}  "
        f"{'att':>3}  {'created (UTC)':19}  rerun of"
    )
    for job in found:
        created = job.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(
            f"{job.id!s:36}  {job.feature:11}  {job.status:9}  "
            f"{job.error_kind or '-':14}  {job.user_id[:16]:16}  {job.attempts:>3}  "
            f"{created:19}  {job.rerun_of or '-'}"
        )
    click.echo(f"{len(found)} job(s)")


@main.command()
@click.argument("job_ids", nargs=-1, type=click.UUID)
@job_filters
@click.option("--dry-run", is_flag=True, help="Say what would be rerun, and do nothing.")
@click.option("--no-notify", is_flag=True, help="Do not notify users about the reruns.")
@click.option("--provider", type=click.Choice(["openai", "anthropic", "offline"]), default=None)
@click.option("--model", default=None, help="Run on this model instead of the configured one.")
@click.option("--reason", default="operator rerun", show_default=True)
@click.option("--force", is_flag=True, help="Also rerun jobs that succeeded or still run.")
@click.option(
    "--include-permanent",
    is_flag=True,
    help="Also rerun jobs that failed as user_not_found, invalid_job or content_filter.",
)
@click.option("--batch", is_flag=True, help=BATCH_HELP + " Inspiration jobs only.")
@click.option("--deliver-by", default=None, help=DELIVER_BY_HELP)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def rerun(
    job_ids: tuple[uuid.UUID, ...],
    status: Any,
    feature: Any,
    error_kind: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    dry_run: bool,
    no_notify: bool,
    provider: str | None,
    model: str | None,
    reason: str,
    force: bool,
    include_permanent: bool,
    batch: bool,
    deliver_by: str | None,
    yes: bool,
) -> None:
    """Rerun jobs by id, or every job matching the filters (e.g. --status failed --since 24h)."""
    from vamu_tasks.reruns import RerunOptions, plan_rerun, rerun_job

    if not job_ids and status is None and feature is None and error_kind is None:
        raise click.UsageError("Give job ids, or filters such as --status failed.")
    when = batch_deadline(batch, deliver_by)
    if when is not None and (provider or model):
        raise click.UsageError(
            "--batch runs on the configured provider and model; drop --provider and --model."
        )
    settings = Settings()
    if when is not None:
        batch_policy_or_exit(settings)
    store = _store(settings)
    try:
        found = store.list_jobs(
            build_filter(job_ids, status, feature, error_kind, since, until, limit)
        )
        missing = set(job_ids) - {job.id for job in found}
        for job_id in sorted(missing, key=str):
            click.echo(f"no job {job_id}", err=True)
        plan = plan_rerun(found, force=force, include_permanent=include_permanent)
        _describe_plan(plan, notify=not no_notify)
        if dry_run or not plan.rerun:
            return
        if not yes:
            click.confirm(f"Rerun {len(plan.rerun)} job(s)?", abort=True)
        from vamu_tasks.app import app
        from vamu_tasks.sender import CelerySender

        options = RerunOptions(
            reason=reason,
            requested_by=_operator(),
            notify=not no_notify,
            provider=provider,
            model=model,
            deliver_by=when,
        )
        sender = CelerySender(app)
        requeued = batched = 0
        with click.progressbar(plan.rerun, label="requeueing", file=sys.stderr) as bar:
            for original in bar:
                job = rerun_job(store, sender, original, options)
                requeued += 1
                batched += job.status == "batched"
        waiting = f" ({batched} in the batch tier)" if batched else ""
        click.echo(f"requeued {requeued}{waiting}, skipped {len(plan.skipped)}")
    finally:
        store.close()


def _operator() -> str:
    import getpass
    import socket

    return f"{getpass.getuser()}@{socket.gethostname()}"[:128]


def _describe_plan(plan: Any, *, notify: bool) -> None:
    click.echo(f"{len(plan.rerun)} job(s) to rerun, {len(plan.skipped)} skipped")
    for (feature, kind), count in sorted(plan.counts().items()):
        click.echo(f"  {feature:11} {kind:16} {count}")
    for job, why in plan.skipped:
        click.echo(f"  skip {job.id} ({why})")
    if notify and plan.users:
        click.echo(
            f"users to notify ({len(plan.users)}): {', '.join(plan.users[:20])}"
            + (" …" if len(plan.users) > 20 else "")
        )
    elif plan.users:
        click.echo("users will not be notified (--no-notify)")
    inp, out = plan.tokens
    click.echo(
        f"estimated from the original runs: {inp} input + {out} output tokens, ${plan.cost_usd:.4f}"
    )


@main.command()
@click.argument("job_id", type=click.UUID)
@click.option("--reason", default="cancelled by an operator", show_default=True)
def cancel(job_id: uuid.UUID, reason: str) -> None:
    """Stop a queued, batched or running job; the row ends `cancelled` and the app is told.

    A batched job's vendor batch runs on (no vendor takes one request out of a batch): its
    result is discarded when it comes, and its cost recorded on the row."""
    from vamu_tasks.app import app
    from vamu_tasks.jobs import cancel_job
    from vamu_tasks.task_runner import dispatch_notifications

    store = _store(Settings())
    try:
        before = store.get_job(job_id)
        outcome = cancel_job(store, job_id, reason)
        if outcome is None:
            job = store.get_job(job_id)
            state = "does not exist" if job is None else f"already {job.status}"
            raise click.ClickException(f"Job {job_id} {state}; nothing to cancel.")
        # The task id is the job id: workers drop the message if it has not started yet, and
        # a running task stops at its next checkpoint.
        if before is not None and before.status != "batched":  # a batched job has no task
            app.control.revoke(str(job_id))
        dispatch_notifications(app, outcome.notifications)
        click.echo(f"cancelled {job_id}")
    finally:
        store.close()


@main.group()
def notifications() -> None:
    """Notifications in the outbox."""


@notifications.command("resend")
@click.argument("job_ids", nargs=-1, type=click.UUID)
@click.option("--given-up", is_flag=True, help="Every notification the sweeper gave up.")
def notifications_resend(job_ids: tuple[uuid.UUID, ...], given_up: bool) -> None:
    """Send again the undelivered notifications of JOB_IDS (or with --given-up, every one the
    sweeper gave up after VAMU_OUTBOX_GIVE_UP_AFTER_S), through the notify queue."""
    from vamu_tasks.app import app
    from vamu_tasks.task_runner import dispatch_notifications

    if not job_ids and not given_up:
        raise click.UsageError("Name one or more job ids, or pass --given-up.")
    store = _store(Settings())
    try:
        ids = store.reopen_notifications(job_ids, given_up_only=given_up)
        dispatch_notifications(app, ids)
        click.echo(f"resent {len(ids)} notification(s)")
    finally:
        store.close()


@main.group()
def contracts() -> None:
    """The job-data contracts NestJS builds against."""


@contracts.command("export")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("docs/schemas"),
    show_default=True,
)
@click.option("--check", is_flag=True, help="Exit 1 if the files differ from the models.")
def contracts_export(directory: Path, check: bool) -> None:
    """Write the JSON Schema of each BullMQ job's data, and contracts.json with every type
    NestJS builds against (generated from the pydantic models)."""
    from vamu_tasks.contracts import export, stale

    if check:
        names = stale(directory)
        if names:
            raise click.ClickException(
                f"out of date: {', '.join(names)}; run `vamu-tasks contracts export`"
            )
        click.echo("contracts up to date")
        return
    for path in export(directory):
        click.echo(f"wrote {path}")


@contracts.command("openapi")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The repository root the files are written under.",
)
@click.option("--check", is_flag=True, help="Exit 1 if the files differ from the models.")
def contracts_openapi(root: Path, check: bool) -> None:
    """Write the NestJS internal API's OpenAPI 3.1 file (docs/openapi/internal-api.json) and the
    example controller's TypeScript types and samples, generated from the pydantic models."""
    from vamu_tasks.context.openapi import export, stale

    if check:
        paths = stale(root)
        if paths:
            raise click.ClickException(
                f"out of date: {', '.join(map(str, paths))}; run `vamu-tasks contracts openapi`"
            )
        click.echo("internal API contract up to date")
        return
    for path in export(root):
        click.echo(f"wrote {path}")


@main.command()
@click.option(
    "--database-url",
    default=DEV_DEFAULTS.database_url,
    show_default=True,
    help="PostgreSQL database; created if missing, then migrated.",
)
@click.option(
    "--redis",
    "redis_server",
    default=DEV_DEFAULTS.redis,
    show_default=True,
    help="Redis server, without a database number.",
)
@click.option("--broker-db", type=int, default=DEV_DEFAULTS.broker_db, show_default=True)
@click.option(
    "--app-db",
    type=int,
    default=DEV_DEFAULTS.app_db,
    show_default=True,
    help="VAMU_REDIS_URL's database: BullMQ, quota, chat streams (NestJS's BullMQ uses it).",
)
@click.option("--notify", default=DEV_DEFAULTS.notify, show_default=True)
@click.option("--flower-port", type=int, default=DEV_DEFAULTS.flower_port, show_default=True)
@click.option(
    "--metrics-base",
    type=int,
    default=DEV_DEFAULTS.metrics_base,
    show_default=True,
    help="/metrics on BASE+1 (llm), BASE+2 (notify), BASE+3 (bridge).",
)
@click.option("--no-metrics", is_flag=True, help="No /metrics ports.")
@click.option(
    "--ready-timeout", type=float, default=DEV_DEFAULTS.ready_timeout_s, show_default=True
)
@click.option("--stop-timeout", type=float, default=DEV_DEFAULTS.stop_timeout_s, show_default=True)
def dev(
    database_url: str,
    redis_server: str,
    broker_db: int,
    app_db: int,
    notify: str,
    flower_port: int,
    metrics_base: int,
    no_metrics: bool,
    ready_timeout: float,
    stop_timeout: float,
) -> None:
    """Run the bridge, both workers and Flower on local PostgreSQL and Redis until Ctrl-C."""
    from vamu_tasks.dev import DevOptions, run_dev

    options = DevOptions(
        database_url=database_url,
        redis=redis_server,
        broker_db=broker_db,
        app_db=app_db,
        notify=notify,
        flower_port=flower_port,
        metrics_base=None if no_metrics else metrics_base,
        ready_timeout_s=ready_timeout,
        stop_timeout_s=stop_timeout,
    )
    sys.exit(run_dev(options))


@main.command()
@click.option("--keep", is_flag=True, help="Keep the demo's data directory afterwards.")
def demo(keep: bool) -> None:
    """Run real inspiration jobs through a real worker on embedded defaults."""
    from vamu_tasks.demo import run_demo

    sys.exit(run_demo(keep=keep))


# `vamu-tasks spend` lives in its own module: the LLM bill is a topic of its own.
main.add_command(spend)

if __name__ == "__main__":
    main()
