"""The Grafana dashboard and the alert rules query only metrics and labels the processes export.

Every PromQL expression in deploy/grafana/dashboards/*.json and deploy/prometheus/alerts.yml is
parsed (promql-parser), and each metric it selects, each label it matches on, groups by, joins
on or shows (legends, alert annotations) is compared with what the LLM worker, the notify
worker and the bridge register: the module-level metrics of `vamu_tasks.metrics` with the
sample names prometheus_client gives them (`_total`, `_bucket`/`_count`/`_sum`, ...), plus the
collectors each process adds, read from real Redis and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser as pq
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import REGISTRY, Collector

from vamu_tasks.features import FEATURES, NOTIFY_QUEUE
from vamu_tasks.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
# Labels Prometheus puts on every scraped series: the scrape config's job, and the target.
TARGET_LABELS = frozenset({"job", "instance"})
# Series Prometheus makes itself for each target.
PROMETHEUS_SERIES = {"up": TARGET_LABELS}
# Grafana's own variables, replaced as Grafana would before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h"}

Labels = frozenset[str]


@dataclass(frozen=True)
class Query:
    where: str  # "dashboard vamu-tasks.json, panel '…'" or "alert VamuX"
    expr: str
    shown: frozenset[str]  # labels the legend or the alert's annotations print


# --- what the processes export ------------------------------------------------------------


def sample_labels(collectors: Iterable[Collector]) -> dict[str, Labels]:
    """Sample name -> label names, as a scrape of these collectors would show them."""
    out: dict[str, set[str]] = {}
    for collector in collectors:
        if isinstance(collector, MetricWrapperBase) and collector._labelnames:
            # A labelled metric has no samples before its first use: give a twin of it, in a
            # registry of its own, one child, and let prometheus_client name its samples.
            twin = type(collector)(collector._name, collector._documentation,
                                   collector._labelnames, registry=CollectorRegistry())
            twin.labels(*["x"] * len(collector._labelnames))
            collector = twin
        for family in collector.collect():
            for sample in family.samples:
                out.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) | TARGET_LABELS for name, labels in out.items()}


@pytest.fixture(scope="module")
def exported(pg_url: str, broker_url: str, app_redis_url: str) -> Iterator[dict[str, Labels]]:
    """Every series the LLM worker, the notify worker and the bridge serve, with its labels."""
    from vamu_tasks.app import metric_collectors as worker_collectors
    from workers.bridge import metric_collectors as bridge_collectors

    settings = Settings(database_url=pg_url, broker_url=broker_url, redis_url=app_redis_url,
                        broker_key_prefix="vamu-dashboards-test:", metrics_port=None)
    llm_queues = {spec.queue for spec in FEATURES.values()}
    collectors = [
        *worker_collectors(settings, llm_queues),
        *worker_collectors(settings, {NOTIFY_QUEUE}),
        *bridge_collectors(settings),
    ]
    registered = list(REGISTRY._collector_to_names)  # what `metrics.serve` serves
    try:
        yield {**sample_labels(registered), **sample_labels(collectors),
               **PROMETHEUS_SERIES}
    finally:
        for collector in collectors:
            getattr(collector, "close", lambda: None)()


# --- what the dashboard and the rules query -----------------------------------------------


def legend_labels(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", text or ""))


def annotation_labels(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)", text or ""))


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard_queries(path: Path) -> list[Query]:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    return [
        Query(f"dashboard {path.name}, panel {panel.get('title')!r}", target["expr"],
              legend_labels(target.get("legendFormat", "")))
        for panel in panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def alert_queries(path: Path) -> list[Query]:
    rules = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [
        Query(f"alert {rule.get('alert') or rule.get('record')}", rule["expr"],
              frozenset().union(*(annotation_labels(str(text))
                                   for text in rule.get("annotations", {}).values())))
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def all_queries() -> list[Query]:
    return [q for path in DASHBOARDS for q in dashboard_queries(path)] + alert_queries(ALERTS)


# --- the check ------------------------------------------------------------------------------


def problems(query: Query, exported: dict[str, Labels]) -> list[str]:
    """What in `query` is not exported: unknown metrics, and labels no selected series has."""
    expr = query.expr
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    found: list[str] = []
    result = output_labels(pq.parse(expr), exported, found)
    if result is not None and not query.shown <= result:
        found.append(f"shows {sorted(query.shown - result)}, not among the result's labels "
                     f"{sorted(result)}")
    return [f"{query.where}: {p}" for p in found]


def output_labels(node: Any, exported: dict[str, Labels], found: list[str]) -> Labels | None:
    """The label names of the series `node` returns (None: a scalar or a string); every
    problem met on the way goes to `found`."""
    if isinstance(node, pq.MatrixSelector):
        node = node.vector_selector
    if isinstance(node, pq.ParenExpr | pq.UnaryExpr | pq.SubqueryExpr):
        return output_labels(node.expr, exported, found)
    if isinstance(node, pq.NumberLiteral | pq.StringLiteral):
        return None
    for kind, check in CHECKS.items():
        if isinstance(node, kind):
            return check(node, exported, found)
    raise AssertionError(f"unexpected PromQL node {type(node).__name__}")


def selector_labels(node: Any, exported: dict[str, Labels], found: list[str]) -> Labels:
    if node.name not in exported:
        found.append(f"{node.name} is not exported")
        return frozenset()
    labels = exported[node.name]
    for matcher in node.matchers.matchers:
        if matcher.name not in labels:
            found.append(f"{node.name} has no label {matcher.name!r} (it has {sorted(labels)})")
    return labels


def call_labels(node: Any, exported: dict[str, Labels], found: list[str]) -> Labels | None:
    args = [output_labels(arg, exported, found) for arg in node.args]
    vectors = [a for a in args if a is not None]
    labels = frozenset().union(*vectors) if vectors else None
    if node.func.name == "histogram_quantile" and labels is not None:
        if "le" not in labels:
            found.append("histogram_quantile over series without an 'le' label")
        labels -= {"le"}
    return labels


def aggregate_labels(node: Any, exported: dict[str, Labels], found: list[str]) -> Labels:
    inner = output_labels(node.expr, exported, found) or frozenset()
    grouping = frozenset(node.modifier.labels) if node.modifier else frozenset()
    if grouping - inner:
        found.append(f"{node.op} groups by {sorted(grouping - inner)}, which the series it "
                     f"aggregates do not have ({sorted(inner)})")
    if node.modifier is None:
        return frozenset()
    if str(node.modifier.type).endswith("Without"):
        return inner - grouping
    return grouping


def binary_labels(node: Any, exported: dict[str, Labels], found: list[str]) -> Labels | None:
    lhs = output_labels(node.lhs, exported, found)
    rhs = output_labels(node.rhs, exported, found)
    if lhs is None or rhs is None:  # a scalar on one side keeps the other side's labels
        return lhs if rhs is None else rhs
    modifier = node.modifier
    if modifier is not None and modifier.matching is not None:
        on = frozenset(modifier.matching.labels)
        for side, labels in (("left", lhs), ("right", rhs)):
            if on - labels:
                found.append(f"matches on {sorted(on - labels)}, missing on the {side}")
    if modifier is not None and modifier.group_labels:
        extra = frozenset(modifier.group_labels)
        if extra - (lhs | rhs):
            found.append(f"groups in {sorted(extra - (lhs | rhs))}, which neither side has")
        return lhs | extra
    return lhs | rhs if str(node.op) == "or" else lhs


CHECKS = {
    pq.VectorSelector: selector_labels,
    pq.Call: call_labels,
    pq.AggregateExpr: aggregate_labels,
    pq.BinaryExpr: binary_labels,
}


# --- the tests --------------------------------------------------------------------------------


def test_the_dashboard_and_the_alert_rules_query_only_exported_metrics_and_labels(exported):
    queries = all_queries()

    assert len(queries) > 20  # every panel's and every rule's query was found
    assert [p for query in queries for p in problems(query, exported)] == []


def test_the_dashboard_shows_what_an_operator_looks_at_first():
    queried = " ".join(query.expr for path in DASHBOARDS for query in dashboard_queries(path))

    for series in [
        "vamu_jobs_finished_total",  # jobs by feature and outcome, failures by kind
        "vamu_queue_oldest_job_age_seconds", "vamu_celery_queue_depth",  # queues
        "vamu_bullmq_waiting_jobs",
        "vamu_llm_request_seconds_bucket", "vamu_llm_time_to_first_token_seconds_bucket",
        'error_kind="rate_limited"', "vamu_llm_fallbacks_total",  # 429s and fallbacks
        "vamu_llm_tokens_total", "vamu_llm_cost_usd_total",  # tokens and dollars
        'kind="cache_read"',  # cache hit rate
        "vamu_outbox_undelivered",
    ]:
        assert series in queried


@pytest.mark.parametrize(("expr", "shown", "problem"), [
    ("sum(rate(vamu_bogus_total[5m]))", "", "vamu_bogus_total is not exported"),
    # A histogram has no _total; a counter's samples are _total, not the bare name.
    ("rate(vamu_llm_request_seconds_total[5m])", "", "is not exported"),
    ("vamu_jobs_finished", "", "is not exported"),
    ('vamu_jobs_finished_total{featur="chatbot"}', "", "has no label 'featur'"),
    ("sum by (model) (rate(vamu_jobs_finished_total[5m]))", "", "groups by ['model']"),
    ("sum by (feature) (rate(vamu_jobs_finished_total[5m]))", "{{provider}}",
     "shows ['provider']"),
    ("histogram_quantile(0.9, sum by (provider) (rate(vamu_llm_request_seconds_bucket[5m])))",
     "", "without an 'le' label"),
    ("sum by (feature, error_kind) (rate(vamu_job_retries_total[5m])) / on (error_kind) "
     "group_left sum by (feature) (rate(vamu_jobs_finished_total[5m]))", "",
     "matches on ['error_kind'], missing on the right"),
])
def test_the_check_reports_a_metric_or_label_that_is_not_exported(exported, expr, shown,
                                                                  problem):
    query = Query("test", expr, legend_labels(shown))

    found = problems(query, exported)

    assert len(found) == 1 and problem in found[0], found


def test_every_panel_and_rule_query_is_valid_promql():
    for query in all_queries():
        expr = query.expr
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        pq.parse(expr)  # raises on a syntax error
