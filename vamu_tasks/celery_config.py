"""Celery settings derived from `Settings`; `celeryconfig.py` applies them to the app."""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from vamu_tasks import embedded_broker, redis_clients, redis_transport
from vamu_tasks.features import BATCH_TASK, FEATURES, NOTIFY_QUEUE, REAP_TASK
from vamu_tasks.settings import Settings
from vamu_tasks.tracing import LOG_FORMAT, TASK_LOG_FORMAT


def queues(settings: Settings) -> list[Queue]:
    """One direct exchange and queue per feature, plus `notify`, all named alike."""
    names = [spec.queue for spec in FEATURES.values()] + [NOTIFY_QUEUE]
    arguments: dict[str, Any] = {}
    if settings.broker_kind == "amqp" and settings.broker_quorum_queues:
        # Quorum queues replicate across RabbitMQ nodes and survive a node loss.
        arguments = {"x-queue-type": "quorum"}
    return [
        Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments=arguments)
        for name in names
    ]


def transport_options(settings: Settings) -> dict[str, Any]:
    kind = settings.broker_kind
    if kind == "filesystem":
        folder = settings.broker_dir
        for sub in (folder, folder / "processed", folder / "control"):
            sub.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(folder / "processed"),
            # Remote control (inspect ping) files: under the data dir, not the working dir.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.05,
        }
    if kind == "amqp":
        return {"confirm_publish": True}
    options: dict[str, Any] = {
        # Short on purpose: a dead worker's messages come back within seconds. A copy of a
        # task that still runs elsewhere finds the job's lease held and does nothing.
        "visibility_timeout": settings.broker_visibility_timeout_s,
        "unacked_restore_interval": 2,
        "unacked_restore_throttle": 1,
        "max_connections": max(100, settings.llm_concurrency * 2),
    }
    if settings.broker_key_prefix:
        options["global_keyprefix"] = settings.broker_key_prefix
    if redis_clients.uses_sentinel(broker_url(settings)):
        options["master_name"] = settings.redis_sentinel_master
    return options


def broker_url(settings: Settings) -> str:
    if settings.broker_kind == "filesystem":
        embedded_broker.register()
        return settings.effective_broker_url.replace(
            "filesystem://", f"{embedded_broker.SCHEME}://"
        )
    # With VAMU_REDIS_SENTINELS, a redis:// broker becomes kombu's sentinel:// list.
    return redis_clients.celery_broker_url(settings)


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker_url": broker_url(settings),
        "broker_connection_retry_on_startup": True,
        "broker_pool_limit": max(10, settings.llm_concurrency),
        "broker_transport_options": transport_options(settings),
        "redis_max_connections": max(100, settings.llm_concurrency * 2),
        # JSON only: a pickled message is refused before it is deserialised.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # The job row is the source of truth; Celery results would only duplicate it.
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_queues": queues(settings),
        "task_routes": {spec.task_name: {"queue": spec.queue} for spec in FEATURES.values()}
        | {"vamu.notify.*": {"queue": NOTIFY_QUEUE}, REAP_TASK: {"queue": NOTIFY_QUEUE}}
        | {BATCH_TASK: {"queue": NOTIFY_QUEUE}},
        "task_default_queue": NOTIFY_QUEUE,
        "task_create_missing_queues": False,
        "worker_log_format": LOG_FORMAT,
        "worker_task_log_format": TASK_LOG_FORMAT,
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        # No beat schedule: the reaper and the outbox sweep run in process in the notify worker
        # that holds the housekeeping lease (vamu_tasks/housekeeping.py), not as a task a tick.
    }
    if settings.effective_broker_url.startswith("redis://"):
        # kombu's transport, except that a lost connection does not kill the worker. Not for
        # rediss://, whose TLS set-up kombu keys on the scheme name.
        config["broker_transport"] = redis_transport.TRANSPORT
    if redis_clients.uses_sentinel(config["broker_url"]):
        # The same fix on kombu's Sentinel transport: a failover drops the connection too.
        config["broker_transport"] = redis_transport.SENTINEL_TRANSPORT
    if settings.broker_kind == "amqp" and settings.broker_quorum_queues:
        # Quorum queues have no global QoS: Celery must know, and delays use native delivery.
        config["worker_detect_quorum_queues"] = True
    return config
