"""Celery settings for every vamu-tasks process, derived from `vamu_tasks.settings.Settings`.

Celery reads this module lazily (on first use of the app's config), so importing the package
connects to nothing.
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from vamu_tasks.features import FEATURES, NOTIFY_QUEUE, SWEEP_TASK
from vamu_tasks.settings import Settings
from vamu_tasks.tracing import LOG_FORMAT, TASK_LOG_FORMAT

_settings = Settings()

broker_url = _settings.effective_broker_url
broker_connection_retry_on_startup = True
broker_pool_limit = max(10, _settings.llm_concurrency)
broker_transport_options: dict[str, Any]
if _settings.is_embedded_broker:
    _settings.broker_dir.mkdir(parents=True, exist_ok=True)
    (_settings.broker_dir / "processed").mkdir(exist_ok=True)
    broker_transport_options = {
        "data_folder_in": str(_settings.broker_dir),
        "data_folder_out": str(_settings.broker_dir),
        "processed_folder": str(_settings.broker_dir / "processed"),
        # Remote control (inspect ping) files: under the data dir, not the working directory.
        "control_folder": str(_settings.broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.05,
    }
else:
    broker_transport_options = {
        # Far above task_time_limit plus the longest retry countdown, so a running or waiting
        # task is never handed to a second worker while the first still holds it.
        "visibility_timeout": 3600,
        "max_connections": max(100, _settings.llm_concurrency * 2),
    }
    if _settings.broker_key_prefix:
        broker_transport_options["global_keyprefix"] = _settings.broker_key_prefix
redis_max_connections = max(100, _settings.llm_concurrency * 2)

# JSON only: a pickled message is refused before it is deserialised.
task_serializer = "json"
result_serializer = "json"
event_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# The job row is the source of truth; Celery results would only duplicate it.
task_ignore_result = True
result_backend = None

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_cancel_long_running_tasks_on_connection_loss = True
task_time_limit = _settings.task_time_limit_s
task_soft_time_limit = _settings.task_soft_time_limit_s

task_queues = [Queue(spec.queue) for spec in FEATURES.values()] + [Queue(NOTIFY_QUEUE)]
task_routes = {spec.task_name: {"queue": spec.queue} for spec in FEATURES.values()} | {
    "vamu.notify.*": {"queue": NOTIFY_QUEUE}
}
task_default_queue = NOTIFY_QUEUE
task_create_missing_queues = False

worker_log_format = LOG_FORMAT
worker_task_log_format = TASK_LOG_FORMAT

worker_send_task_events = True
task_send_sent_event = True

beat_schedule = {
    "sweep-notification-outbox": {
        "task": SWEEP_TASK,
        "schedule": _settings.outbox_sweep_interval_s,
        "options": {"queue": NOTIFY_QUEUE, "expires": _settings.outbox_sweep_interval_s},
    }
}
