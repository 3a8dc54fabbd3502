"""The Celery app: `celery -A vamu_tasks worker|inspect|flower` finds it here."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown

app = Celery(
    "vamu_tasks",
    include=["vamu_tasks.inspiration.tasks", "vamu_tasks.notify.tasks"],
)
# A module name, so the settings are read on first use, not when this module is imported.
app.config_from_object("celeryconfig")


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
