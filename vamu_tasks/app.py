"""The Celery app: `celery -A vamu_tasks worker|inspect|flower` finds it here."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from vamu_tasks import tracing

app = Celery(
    "vamu_tasks",
    include=[
        "vamu_tasks.inspiration.tasks",
        "vamu_tasks.chatbot.tasks",
        "vamu_tasks.agent.tasks",
        "vamu_tasks.notify.tasks",
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


@worker_init.connect
def _check_configuration(**_: Any) -> None:
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
    if settings.metrics_port:
        from vamu_tasks.metrics import MetricsPortUnavailable

        try:
            _serve_metrics(settings)
        except MetricsPortUnavailable as exc:
            raise SystemExit(f"vamu-tasks: {exc}") from exc


def _serve_metrics(settings: Any) -> None:
    from vamu_tasks import metrics, redis_clients
    from vamu_tasks.features import FEATURES, NOTIFY_QUEUE

    collectors = []
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
    metrics.serve(settings.metrics_port, settings.metrics_address, collectors)


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
