"""Prometheus metrics Flower lacks: LLM latency, tokens, cost, errors, retries, outcomes, queues.

Each process (LLM worker, notify worker, bridge) serves its own `/metrics` on
`VAMU_METRICS_PORT`. A prefork pool would split counters across children: for that, set
`PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess mode) and the endpoint aggregates.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from vamu_tasks.domain import (
    LLMRequest,
    LLMResult,
    StreamEvent,
    TextDelta,
    ToolsRequest,
    Usage,
)
from vamu_tasks.errors import VamuError
from vamu_tasks.llm.pricing import cost_usd
from vamu_tasks.llm.wrapper import CallKind, ProviderWrapper

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160)

LLM_SECONDS = Histogram(
    "vamu_llm_request_seconds",
    "LLM call duration",
    ["provider", "model", "call"],
    buckets=LATENCY_BUCKETS,
)
LLM_TTFT = Histogram(
    "vamu_llm_time_to_first_token_seconds",
    "Time to the first streamed token",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
)
LLM_TOKENS = Counter("vamu_llm_tokens_total", "Tokens", ["provider", "model", "kind"])
LLM_COST = Counter("vamu_llm_cost_usd_total", "Cost in US dollars", ["provider", "model"])
LLM_ERRORS = Counter("vamu_llm_errors_total", "Failed LLM calls", ["provider", "error_kind"])
FALLBACKS = Counter(
    "vamu_llm_fallbacks_total",
    "Jobs moved to the fallback provider",
    ["feature", "from_provider", "to_provider"],
)
RETRIES = Counter(
    "vamu_job_retries_total", "Job attempts that will run again", ["feature", "error_kind"]
)
JOBS_FINISHED = Counter(
    "vamu_jobs_finished_total", "Jobs that ended", ["feature", "status", "error_kind"]
)
JOB_SECONDS = Histogram(
    "vamu_job_duration_seconds",
    "Job creation to end",
    ["feature", "status"],
    buckets=LATENCY_BUCKETS,
)
BRIDGE_JOBS = Counter(
    "vamu_bridge_jobs_total", "BullMQ jobs the bridge handled", ["queue", "outcome", "reason"]
)
NOTIFICATIONS = Counter(
    "vamu_notifications_total", "Notification deliveries", ["transport", "outcome"]
)


def record_usage(provider: str, model: str, usage: Usage) -> None:
    LLM_TOKENS.labels(provider, model, "input").inc(usage.input_tokens)
    LLM_TOKENS.labels(provider, model, "output").inc(usage.output_tokens)
    LLM_TOKENS.labels(provider, model, "cache_read").inc(usage.cache_read_tokens)
    LLM_TOKENS.labels(provider, model, "cache_write").inc(usage.cache_write_tokens)
    cost = cost_usd(model, usage)
    if cost is not None:
        LLM_COST.labels(provider, model).inc(float(cost))


class InstrumentedLLM(ProviderWrapper):
    """Wraps an `LLMProvider` to time its calls and count tokens, cost and errors."""

    def _call(
        self, kind: CallKind, request: LLMRequest | ToolsRequest, fn: Callable[[], Any]
    ) -> Any:
        started = time.perf_counter()
        try:
            result = fn()
        except VamuError as exc:
            LLM_ERRORS.labels(self.name, exc.error_kind).inc()
            raise
        LLM_SECONDS.labels(self.name, self.model, kind).observe(time.perf_counter() - started)
        record_usage(result.provider, result.model, result.usage)
        return result

    def stream(self, request: LLMRequest) -> Iterator[StreamEvent]:
        started = time.perf_counter()
        first = True
        try:
            for event in self._inner.stream(request):
                if first and isinstance(event, TextDelta):
                    LLM_TTFT.labels(self.name, self.model).observe(time.perf_counter() - started)
                    first = False
                if isinstance(event, LLMResult):
                    LLM_SECONDS.labels(self.name, self.model, "stream").observe(
                        time.perf_counter() - started
                    )
                    record_usage(event.provider, event.model, event.usage)
                yield event
        except VamuError as exc:
            LLM_ERRORS.labels(self.name, exc.error_kind).inc()
            raise


class QueueDepthCollector(Collector):
    """Reads queue lengths when scraped: `{queue: length}` from the given function."""

    def __init__(self, name: str, doc: str, read: Callable[[], dict[str, int]]) -> None:
        self._name = name
        self._doc = doc
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._doc, labels=["queue"])
        try:
            for queue, depth in self._read().items():
                family.add_metric([queue], depth)
        except Exception as exc:  # a scrape must not fail because the broker is away
            log.warning("could not read queue depths: %s", exc)
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


class MetricsPortUnavailable(Exception):
    """The metrics port cannot be bound: the process must not run on without its metrics."""


def serve(port: int, address: str, extra: Iterable[Collector] = ()) -> None:
    """Serve `/metrics` for this process (aggregating children in multiprocess mode).

    Raises `MetricsPortUnavailable` when the port is taken: a process that started without
    metrics and without a word would be invisible to every dashboard and alert.
    """
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    for collector in extra:
        registry.register(collector)
    try:
        start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        raise MetricsPortUnavailable(
            f"cannot serve metrics on {address}:{port} ({exc.strerror or exc}); give each "
            "process its own free VAMU_METRICS_PORT, or unset it"
        ) from exc
    log.info("metrics on http://%s:%d/metrics", address, port)


def redis_queue_depths(
    client: redis.Redis, queues: list[str], prefix: str = ""
) -> Callable[[], dict[str, int]]:
    """A reader of list lengths (Celery queues on a Redis broker, BullMQ waiting lists).

    The client comes from `vamu_tasks.redis_clients`, so it follows a Sentinel failover.
    """

    def read() -> dict[str, int]:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(f"{prefix}{queue}")
        return {queue: int(n) for queue, n in zip(queues, pipe.execute(), strict=True)}

    return read
