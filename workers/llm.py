"""`python -m workers.llm`: a Celery worker for the feature queues (LLM-bound, thread pool)."""

from __future__ import annotations

import sys

from vamu_tasks.features import FEATURES
from vamu_tasks.settings import Settings


def worker_argv(settings: Settings, extra: list[str]) -> list[str]:
    # Threads, not prefork: each job mostly waits on HTTP, so 200 threads in one process use the
    # 2 cores far better than 2 forked children (see docs/architecture.md, "Pools").
    queues = ",".join(spec.queue for spec in FEATURES.values())
    return [
        "worker",
        "--queues",
        queues,
        "--pool",
        "threads",
        "--concurrency",
        str(settings.llm_concurrency),
        "--hostname",
        "llm@%h",
        "--loglevel",
        "INFO",
        # Gossip makes every worker read every other worker's events (all task events, once
        # Flower turns them on) to track its peers; nothing here uses it.
        "--without-gossip",
        *extra,
    ]


def main(argv: list[str] | None = None) -> None:
    from vamu_tasks.app import app
    from vamu_tasks.bootstrap import preload_provider
    from vamu_tasks.worker_cli import run_worker

    settings = Settings()
    preload_provider(settings)
    run_worker(app, worker_argv(settings, list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
