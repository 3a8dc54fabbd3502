"""Prometheus metrics Flower lacks: LLM latency, tokens, cost, errors, retries, outcomes, queues.

Each process (LLM worker, notify worker, bridge) serves its own `/metrics` on
`VAMU_METRICS_PORT`. A prefork pool would split counters across children: for that, set
`PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess mode) and the endpoint aggregates.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
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

    from vamu_tasks.store.backlog import Backlog

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
# The daily spend budgets in force (VAMU_BUDGET_*_USD_PER_DAY), set by the workers that serve
# metrics, so an alert can compare the spend pace with them; absent when no budget is set.
SPEND_BUDGET = Gauge(
    "vamu_spend_budget_usd_per_day",
    "Daily spend budget in US dollars (scope: provider, each; user, each)",
    ["scope"],
    multiprocess_mode="max",
)
HOUSEKEEPING_LEADER = Gauge(
    "vamu_housekeeping_leader", "1 while this process holds the housekeeping lease, else 0"
)
HOUSEKEEPING_RUNS = Counter(
    "vamu_housekeeping_runs_total",
    "Housekeeping passes this process ran (outcome: nothing, found, error)",
    # Not `job`: Prometheus owns that label (the scrape job) and would rename ours.
    ["task", "outcome"],
)


BATCH_JOBS = Counter(
    "vamu_batch_jobs_total",
    "Jobs through the batch tier by what became of them: submitted, committed, failed, "
    "to_sync (run synchronously), discarded (a late result)",
    ["provider", "outcome"],
)


def record_usage(provider: str, model: str, usage: Usage, *, batch: bool = False) -> None:
    LLM_TOKENS.labels(provider, model, "input").inc(usage.input_tokens)
    LLM_TOKENS.labels(provider, model, "output").inc(usage.output_tokens)
    LLM_TOKENS.labels(provider, model, "cache_read").inc(usage.cache_read_tokens)
    LLM_TOKENS.labels(provider, model, "cache_write").inc(usage.cache_write_tokens)
    cost = cost_usd(model, usage, batch=batch)
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


class BacklogCollector(Collector):
    """The backlog the job rows show, read when scraped (the notify worker serves it).

    Read at scrape time, not by a refresh loop: the values are as fresh as the scrape, there is
    no thread that could die and leave a stale number behind, and an unreachable database shows
    at once as `vamu_store_up 0` (the other families then have no samples). Every queue in
    `queues` gets a sample, 0 when nothing waits, so a quiet queue reads 0 rather than no data.
    """

    def __init__(
        self,
        read: Callable[[], Backlog],
        queue_of: Callable[[str], str],
        queues: Sequence[str],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        close: Callable[[], None] = lambda: None,
    ) -> None:
        self._read = read
        self._queue_of = queue_of  # feature -> queue
        self._queues = list(queues)
        self._now = now
        self.close = close  # releases what `read` holds (its database engine)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "vamu_store_up", "1 when the backlog gauges could be read from the database"
        )
        queued = GaugeMetricFamily(
            "vamu_queued_jobs",
            "Job rows queued: not started yet, or waiting out a retry countdown",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "vamu_queue_oldest_job_age_seconds",
            "How long the longest-waiting job due to run has waited for a worker (0: none)",
            labels=["queue"],
        )
        outbox = GaugeMetricFamily(
            "vamu_outbox_undelivered",
            "Undelivered notification rows: pending (still sent) or given_up",
            labels=["state"],
        )
        outbox_oldest = GaugeMetricFamily(
            "vamu_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending (undelivered, not given up) notification (0: none)",
        )
        try:
            backlog = self._read()
        except Exception as exc:  # a scrape must not fail because the database is away
            log.warning("could not read the backlog from the database: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        now = self._now()
        counts = dict.fromkeys(self._queues, 0)
        ages = dict.fromkeys(self._queues, 0.0)
        for feature, n in backlog.queued.items():
            queue = self._queue_of(feature)
            counts[queue] = counts.get(queue, 0) + n
        for feature, since in backlog.oldest_waiting_since.items():
            queue = self._queue_of(feature)
            ages[queue] = max(ages.get(queue, 0.0), (now - since).total_seconds(), 0.0)
        for queue in counts:
            queued.add_metric([queue], counts[queue])
            oldest.add_metric([queue], ages.get(queue, 0.0))
        outbox.add_metric(["pending"], backlog.outbox_pending)
        outbox.add_metric(["given_up"], backlog.outbox_given_up)
        pending_since = backlog.outbox_oldest_pending_since
        outbox_oldest.add_metric(
            [], max((now - pending_since).total_seconds(), 0.0) if pending_since else 0.0
        )
        up.add_metric([], 1)
        yield from (up, queued, oldest, outbox, outbox_oldest)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


class MetricsPortUnavailable(Exception):
    """The metrics port cannot be bound: the process must not run on without its metrics."""


def serve(port: int, address: str, extra: Iterable[Collector] = ()) -> str:
    """Serve `/metrics` for this process (aggregating children in multiprocess mode); its URL.

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
    url = f"http://{address}:{port}/metrics"
    log.info("metrics on %s", url)
    return url


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
