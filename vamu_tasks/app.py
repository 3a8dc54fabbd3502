"""The Celery app: `celery -A vamu_tasks worker|inspect|flower` finds it here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery.signals import (
    after_setup_logger,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from vamu_tasks import tracing

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from vamu_tasks.settings import Settings

app = Celery(
    "vamu_tasks",
    include=[
        "vamu_tasks.inspiration.tasks",
        "vamu_tasks.chatbot.tasks",
        "vamu_tasks.agent.tasks",
        "vamu_tasks.notify.tasks",
        "vamu_tasks.batches.tasks",
    ],
)
# A module name, so the settings are read on first use, not when this module is imported.
app.config_from_object("celeryconfig")
tracing.install_log_record_factory()


@task_prerun.connect
def _enter_trace(
    task: Task[Any, Any] | None = None, kwargs: dict[str, Any] | None = None, **_: Any
) -> None:
    if task is None:
        return
    fields = {key: getattr(task.request, key, None) for key in tracing.TRACE_HEADERS}
    ref = (kwargs or {}).get("ref")
    if isinstance(ref, dict):
        fields["job"] = ref.get("job_id")
        fields["event"] = ref.get("event_id")  # a notification delivery
    tracing.set_trace(fields)


@task_postrun.connect
def _leave_trace(**_: Any) -> None:
    tracing.set_trace(None)


@after_setup_logger.connect
def _one_line_per_task(loglevel: int | str | None = None, **_: Any) -> None:
    """At INFO, a task logs one line, Celery's `Task … succeeded in …s` (or its failure), not
    also `Task … received`, nor the HTTP client's `HTTP Request: POST … "HTTP/1.1 200 OK"` for
    each call to the NestJS API and the LLM: the row says when it was queued and started, a
    failed call is logged by the error it becomes, and each line costs the worker CPU per job
    (docs/performance.md). `--loglevel DEBUG` shows them all."""
    import logging

    level = logging.getLevelName(loglevel) if isinstance(loglevel, str) else loglevel
    if not isinstance(level, int) or level >= logging.INFO:
        for name in ("celery.worker.strategy", "httpx2", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)


# Where this worker serves /metrics; logged once the worker's logging is set up (worker_init
# runs before Celery configures logging, so a line logged there would be lost).
_metrics_url: str | None = None


@worker_init.connect
def _check_configuration(sender: Any = None, **_: Any) -> None:
    """Fail at start, not at the first job, when the settings cannot build this process's clients.

    Nothing connects here: building a container creates clients and engines lazily.
    """
    from vamu_tasks.bootstrap import build_container
    from vamu_tasks.errors import VamuError
    from vamu_tasks.settings import Settings

    try:
        settings = Settings()
        build_container(settings).close()
    except (VamuError, ValueError) as exc:
        # SystemExit passes through Celery's signal dispatch, which swallows plain exceptions.
        raise SystemExit(f"vamu-tasks: configuration error: {exc}") from exc
    from vamu_tasks.otel import provider as otel

    try:
        otel.start("vamu-tasks-worker")
    except VamuError as exc:
        raise SystemExit(f"vamu-tasks: configuration error: {exc}") from exc
    if settings.metrics_port:
        from vamu_tasks.metrics import MetricsPortUnavailable

        consumed = set(sender.app.amqp.queues.consume_from) if sender is not None else set()
        try:
            _serve_metrics(settings, consumed)
        except MetricsPortUnavailable as exc:
            raise SystemExit(f"vamu-tasks: {exc}") from exc


@worker_ready.connect
def _log_metrics_address(**_: Any) -> None:
    import logging

    if _metrics_url:
        logging.getLogger(__name__).info("metrics on %s", _metrics_url)
    else:
        logging.getLogger(__name__).info("no /metrics: VAMU_METRICS_PORT is unset")


def metric_collectors(settings: Settings, consumed_queues: set[str]) -> list[Collector]:
    """What a worker serves on /metrics besides the module-level metrics of `metrics.py`:
    the Redis broker's queue lengths, and, in a worker of the notify queue, the backlog the
    job rows show (the notify workers query the database for it, not every LLM worker)."""
    from vamu_tasks import metrics, redis_clients
    from vamu_tasks.features import FEATURES, NOTIFY_QUEUE

    collectors: list[Collector] = []
    if settings.broker_kind == "redis":
        queues = [spec.queue for spec in FEATURES.values()] + [NOTIFY_QUEUE]
        read = metrics.redis_queue_depths(
            redis_clients.broker_redis(settings, socket_timeout=2),
            queues,
            settings.broker_key_prefix or "",
        )
        collectors.append(
            metrics.QueueDepthCollector("vamu_celery_queue_depth", "Tasks waiting", read)
        )
    if NOTIFY_QUEUE in consumed_queues:
        from vamu_tasks.store.backlog import backlog_engine, read_backlog

        engine = backlog_engine(settings.effective_database_url)
        queue_of: dict[str, str] = {feature: spec.queue for feature, spec in FEATURES.items()}
        collectors.append(
            metrics.BacklogCollector(
                lambda: read_backlog(engine),
                lambda feature: queue_of.get(feature, feature),
                [spec.queue for spec in FEATURES.values()],
                close=engine.dispose,
            )
        )
    return collectors


def _serve_metrics(settings: Settings, consumed_queues: set[str]) -> None:
    from vamu_tasks import metrics

    global _metrics_url
    if settings.budget_provider_usd_per_day is not None:
        metrics.SPEND_BUDGET.labels("provider").set(float(settings.budget_provider_usd_per_day))
    if settings.budget_user_usd_per_day is not None:
        metrics.SPEND_BUDGET.labels("user").set(float(settings.budget_user_usd_per_day))
    _metrics_url = metrics.serve(
        settings.metrics_port or 0,
        settings.metrics_address,
        metric_collectors(settings, consumed_queues),
    )


@worker_process_init.connect
def _forget_parent_container(**_: Any) -> None:
    from vamu_tasks import bootstrap

    # A forked pool child must open its own connections, not reuse its parent's sockets.
    bootstrap.set_container(None)


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_container(**_: Any) -> None:
    from vamu_tasks import bootstrap

    bootstrap.close_container()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _flush_traces(**_: Any) -> None:
    from vamu_tasks.otel import provider as otel

    otel.shutdown()
