"""A real Prometheus scrapes a real worker: every dashboard query and alert rule evaluates, and
the panels about what the worker did show data.

Needs the `prometheus` binary (Debian's `prometheus` package, which `.ci/run` installs for
promtool); skips without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Stack
from tests.integration.test_dashboards import DASHBOARDS, dashboard_queries
from tests.support.services import free_port
from tests.support.worker import wait_for_job
from vamu_tasks.testing.answers import ideas_responder

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
# The panels the worker of the stack feeds once it has run a job that succeeded and one that
# failed (not the bridge's series, nor streamed chats: no bridge or chat runs here).
FED_PANELS = {
    "Jobs finished per minute, by feature and outcome",
    "Failure rate by feature",
    "Failures per minute, by kind",
    "Job duration, creation to end (succeeded)",
    "Processes up",
    "Longest wait for a worker, per queue",
    "Queued job rows, per queue",
    "Broker queue depth",
    "LLM call latency",
    "Tokens per hour, by kind",
    "Dollars per hour, by model",
    "Spend, last 24 hours",
    "Prompt cache hit rate",
    "Deliveries per minute, by transport and outcome",
    "Outbox: undelivered notifications",
}


def api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def wait_until(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path):
    if PROMETHEUS is None:
        pytest.skip("the prometheus binary is not installed (apt-get install prometheus)")
    shutil.copy(ROOT / "deploy/prometheus/alerts.yml", tmp_path / "alerts.yml")
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["scrape_configs"][0]["static_configs"] = [
        {"targets": [f"127.0.0.1:{stack.env['VAMU_METRICS_PORT']}"]}
    ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield port
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_prometheus_evaluates_every_query_and_rule_over_a_real_worker(stack: Stack, fake_llm,
                                                                      fake_api, prometheus):
    fake_llm.set_responder(ideas_responder)
    for data in ({"userId": "u-ada", "count": 1}, {"userId": "u-ghost", "count": 1}):
        wait_for_job(stack.store, stack.submit(data))
    # Two scrapes after the jobs, so rates over them have two points.
    up = 'up{job="vamu-tasks"} == 1'
    wait_until(lambda: api(prometheus, "query", query=up)["result"])
    time.sleep(3)

    empty, failed = [], []
    for path in DASHBOARDS:
        for query in dashboard_queries(path):
            expr = query.expr.replace("$__rate_interval", "1m")
            try:
                result = api(prometheus, "query", query=expr)["result"]
            except urllib.error.HTTPError as exc:
                failed.append(f"{query.where}: {exc.read().decode()}")
                continue
            from_bridge = "vamu_bullmq_" in expr or "vamu_bridge_" in expr
            panel = query.where.split("panel ")[1].strip("'\"")
            if not result and panel in FED_PANELS and not from_bridge:
                empty.append(f"{query.where}: {expr}")
    rules = wait_until(lambda: [
        rule for group in api(prometheus, "rules")["groups"] for rule in group["rules"]
        if rule.get("lastEvaluation", "").startswith("2") and rule["health"] != "unknown"
    ] or None)

    assert failed == []
    assert empty == []
    assert len(rules) == len(yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
                             ["groups"][0]["rules"])
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
