"""`python -m workers.bridge`: turns NestJS's BullMQ jobs into Celery jobs."""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client.registry import Collector

from vamu_tasks.bridge.worker import Bridge, build_deps
from vamu_tasks.errors import VamuError
from vamu_tasks.otel import provider as otel
from vamu_tasks.settings import Settings
from vamu_tasks.tracing import LOG_FORMAT, install_log_record_factory


def metric_collectors(settings: Settings) -> list[Collector]:
    """What the bridge serves on /metrics besides the module-level metrics of `metrics.py`."""
    from vamu_tasks import metrics, redis_clients

    queues = [settings.bullmq_queue, settings.bullmq_sync_queue]
    prefix = settings.bullmq_prefix
    read_waiting = metrics.redis_queue_depths(
        redis_clients.app_redis(settings, socket_timeout=2),
        [f"{q}:wait" for q in queues],
        f"{prefix}:",
    )

    def read() -> dict[str, int]:
        return {name.removesuffix(":wait"): depth for name, depth in read_waiting().items()}

    return [metrics.QueueDepthCollector("vamu_bullmq_waiting_jobs", "BullMQ jobs waiting", read)]


def serve_metrics(settings: Settings) -> None:
    from vamu_tasks import metrics

    metrics.serve(settings.metrics_port or 0, settings.metrics_address, metric_collectors(settings))


async def serve(settings: Settings) -> None:
    if settings.metrics_port:
        serve_metrics(settings)
    else:
        logging.getLogger("vamu_tasks.bridge").info("no /metrics: VAMU_METRICS_PORT is unset")
    bridge = Bridge(settings, build_deps(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await bridge.start()
    logging.getLogger("vamu_tasks.bridge").info("bridge ready")
    await stop.wait()
    logging.getLogger("vamu_tasks.bridge").info("bridge stopping: finishing jobs in hand")
    await bridge.close()
    otel.shutdown()  # sends the spans still buffered
    logging.getLogger("vamu_tasks.bridge").info("bridge stopped")


def main() -> None:
    install_log_record_factory()
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    from vamu_tasks.metrics import MetricsPortUnavailable

    try:
        otel.start("vamu-tasks-bridge")
    except VamuError as exc:
        raise SystemExit(f"vamu-tasks: configuration error: {exc}") from exc
    try:
        asyncio.run(serve(Settings()))
    except MetricsPortUnavailable as exc:
        raise SystemExit(f"vamu-tasks: {exc}") from exc


if __name__ == "__main__":
    main()
