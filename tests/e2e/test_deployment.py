"""docker-compose.yml is valid, and every command it runs works outside Docker."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import Stack
from tests.support.services import free_port
from tests.support.worker import sender_app, wait_for_job
from vamu_tasks.domain import NewJob, Notification, Spend, event_id_for
from vamu_tasks.sender import CelerySender
from vamu_tasks.submit import submit_job
from vamu_tasks.testing.answers import ideas_responder

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

# Each compose command, and the test that runs it outside Docker.
EXERCISED = {
    ("vamu-tasks", "db", "upgrade"): "tests/integration/test_cli.py",
    ("python", "-m", "workers.llm"): "this file",
    ("python", "-m", "workers.notify"): "this file",
    ("python", "-m", "workers.bridge"): "tests/e2e/test_bridge.py",
    ("python", "-m", "workers.flower"): "tests/e2e/test_flower.py",
}


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_validates_and_runs_only_exercised_commands(tmp_path):
    compose = compose_command()
    if compose is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed here")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")

    result = subprocess.run([*compose, "config"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)

    assert result.returncode == 0, result.stderr
    services = _services(result.stdout)
    assert {"postgres", "redis", "migrate", "worker-llm", "worker-notify", "bridge"} <= set(
        services)
    assert "--appendonly" in services["redis"] and "noeviction" in services["redis"]
    assert {"prometheus", "grafana"} <= set(services)  # the `monitoring` profile
    for name, command in services.items():
        if name in ("postgres", "redis", "prometheus", "grafana"):  # their images' own commands
            continue
        assert tuple(command) in EXERCISED, f"{name} runs {command}, which no test runs"


def _services(config: str) -> dict[str, list[str]]:
    """Service name -> command, from the normalised config compose printed."""
    services = yaml.safe_load(config)["services"]
    out = {}
    for name, spec in services.items():
        command = spec.get("command") or []
        out[name] = command.split() if isinstance(command, str) else [str(c) for c in command]
    return out


def test_the_composed_workers_run_a_job_and_sweep_the_outbox(stack: Stack, fake_llm, fake_api,
                                                            tmp_path):
    fake_llm.set_responder(ideas_responder)
    prefix = f"compose-{uuid.uuid4().hex[:8]}:"
    env = {**stack.env, "VAMU_BROKER_KEY_PREFIX": prefix, "VAMU_DATA_DIR": str(tmp_path),
           "VAMU_LLM_CONCURRENCY": "4", "VAMU_NOTIFY_CONCURRENCY": "2",
           "VAMU_OUTBOX_SWEEP_INTERVAL_S": "1", "VAMU_METRICS_PORT": str(free_port())}
    env.pop("VAMU_METRICS_PORT")
    processes = []
    try:
        for module in ("workers.llm", "workers.notify"):
            log = open(tmp_path / f"{module}.log", "wb")
            processes.append((subprocess.Popen([sys.executable, "-m", module], env={**env},
                                               cwd=tmp_path, stdout=log,
                                               stderr=subprocess.STDOUT), log))
        _wait_ready(tmp_path / "workers.llm.log")
        _wait_ready(tmp_path / "workers.notify.log")
        app = sender_app(env)
        job, _ = submit_job(stack.store, CelerySender(app), "inspiration", {"userId": "u-ada"},
                            source="cli")
        assert wait_for_job(stack.store, job.id).status == "succeeded"
        stack.webhook.wait_for(lambda d: d["data"].get("jobId") == str(job.id))

        lost, _ = stack.store.create_job(NewJob("inspiration", "u-ada", {"userId": "u-ada"},
                                                "api"))
        stack.store.start_attempt(lost.id)
        note = Notification(event_id_for(lost.id, "inspiration-ready"), "inspiration-ready",
                            "u-ada", lost.id, {"jobId": str(lost.id)})
        # Committed, never enqueued: only the outbox sweep (housekeeping in the notify worker)
        # can deliver it.
        stack.store.succeed(lost.id, {"ideas": []}, Spend(), [note])
        delivered = stack.webhook.wait_for(lambda d: d["id"] == str(note.id), timeout=20)
        assert delivered["data"] == {"jobId": str(lost.id)}
        app.close()
    finally:
        for process, log in processes:
            process.terminate()
            process.wait(30)
            log.close()


def _wait_ready(log: Path, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while " ready." not in (log.read_text(errors="replace") if log.exists() else ""):
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
        time.sleep(0.1)
