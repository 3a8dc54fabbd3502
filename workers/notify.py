"""`python -m workers.notify`: a Celery worker for the notify queue, with the outbox sweeper."""

from __future__ import annotations

import sys

from vamu_tasks.features import NOTIFY_QUEUE
from vamu_tasks.settings import Settings


def worker_argv(settings: Settings, extra: list[str]) -> list[str]:
    schedule = (settings.data_dir / "celerybeat-schedule").resolve()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
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
        # Embedded beat runs the outbox sweep; with several notify workers, give it to one
        # (`--no-beat` on the others) or run `celery -A vamu_tasks beat` on its own.
        "--beat",
        "--schedule",
        str(schedule),
        *extra,
    ]


def main(argv: list[str] | None = None) -> None:
    from vamu_tasks.app import app

    args = list(sys.argv[1:] if argv is None else argv)
    argv_ = worker_argv(Settings(), [a for a in args if a != "--no-beat"])
    if "--no-beat" in args:
        i = argv_.index("--beat")
        del argv_[i : i + 3]
    app.worker_main(argv_)


if __name__ == "__main__":
    main()
