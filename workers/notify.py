"""`python -m workers.notify`: a Celery worker for the notify queue, with housekeeping.

Housekeeping (the reaper, the outbox sweep) runs in whichever notify worker holds the
housekeeping lease (vamu_tasks/housekeeping.py); start as many as you like. `--no-beat` keeps
this one out of it.
"""

from __future__ import annotations

import sys

from vamu_tasks.features import NOTIFY_QUEUE
from vamu_tasks.settings import Settings


def worker_argv(settings: Settings, extra: list[str]) -> list[str]:
    return [
        "worker",
        "--queues",
        NOTIFY_QUEUE,
        "--pool",
        "threads",
        "--concurrency",
        str(settings.notify_concurrency),
        "--hostname",
        "notify@%h",
        "--loglevel",
        "INFO",
        # Gossip makes every worker read every other worker's events (all task events, once
        # Flower turns them on) to track its peers; nothing here uses it.
        "--without-gossip",
        *extra,
    ]


def main(argv: list[str] | None = None) -> None:
    from vamu_tasks.app import app
    from vamu_tasks.housekeeping import run_in_this_worker
    from vamu_tasks.worker_cli import run_worker

    args = list(sys.argv[1:] if argv is None else argv)
    # `--no-beat` (the name from when housekeeping ran in Celery's embedded beat): no
    # housekeeping in this worker. Without it, this worker contends for the lead.
    if "--no-beat" not in args:
        run_in_this_worker()
    run_worker(app, worker_argv(Settings(), [a for a in args if a != "--no-beat"]))


if __name__ == "__main__":
    main()
