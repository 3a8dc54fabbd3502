"""What each worker process loads: only the LLM SDK it calls, and no Celery CLI it never runs.

Each check runs the real entry point (`workers.llm.main`, `workers.notify.main`) with `--help`
in a fresh interpreter, so the worker command parses its argv as at start-up and exits, imports
the task modules as the worker does next, and then lists the heavy packages in `sys.modules`
(bench/memory.py measures what they cost in RSS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ["anthropic", "openai", "flower", "tornado", "prompt_toolkit", "click_repl"]
PROBE = """
import json, sys
from workers import {module}
{module}.main({argv!r})
from vamu_tasks.app import app
app.loader.import_default_modules()
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def loaded_by(module: str, argv: list[str], env: dict[str, str]) -> list[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("VAMU_", "OPENAI_", "ANTHROPIC_"))
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, argv=argv, heavy=HEAVY)],
        env={**base, **env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Start worker instance." in done.stdout  # the worker command's --help
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_llm_worker_loads_the_openai_sdk_and_not_the_anthropic_sdk_or_the_celery_cli() -> None:
    env = {"VAMU_LLM_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test-not-a-key"}
    assert loaded_by("llm", ["--help"], env) == ["openai"]


def test_the_llm_worker_loads_the_anthropic_sdk_when_anthropic_is_the_provider() -> None:
    env = {"VAMU_LLM_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "sk-ant-test-not-a-key"}
    assert "anthropic" in loaded_by("llm", ["--help"], env)


def test_the_notify_worker_loads_no_llm_sdk_and_not_the_celery_cli() -> None:
    env = {"VAMU_LLM_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test-not-a-key"}
    assert loaded_by("notify", ["--no-beat", "--help"], env) == []


def test_a_bad_worker_option_is_refused_as_the_celery_command_refuses_it() -> None:
    from vamu_tasks.app import app
    from vamu_tasks.worker_cli import run_worker

    with pytest.raises(click.BadParameter, match="non-negative integer"):
        run_worker(app, ["worker", "--concurrency", "many"])
    with pytest.raises(click.NoSuchOption, match="--no-such-option"):
        run_worker(app, ["worker", "--no-such-option"])


def test_run_worker_takes_only_a_worker_command_line() -> None:
    from vamu_tasks.app import app
    from vamu_tasks.worker_cli import run_worker

    with pytest.raises(ValueError, match="start with 'worker'"):
        run_worker(app, ["beat"])


BATCH_PROBE = """
import json, sys
from vamu_tasks.bootstrap import LazyBatchLLM
from vamu_tasks.settings import Settings

api = LazyBatchLLM(Settings(), "openai", [])
seen = [api.name, api.model, "openai" in sys.modules]
try:
    api.cancel("batch-that-does-not-exist")
except Exception:
    pass
print(json.dumps(seen + ["openai" in sys.modules]))
"""


def test_a_batch_pass_with_nothing_to_send_loads_no_sdk_and_the_first_vendor_call_does() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAMU_", "OPENAI_"))}
    env = {
        **base,
        "VAMU_LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-test-not-a-key",
        # Nothing listens there: the call fails fast, after the SDK is loaded.
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "VAMU_OPENAI_MODEL": "gpt-test",
    }
    done = subprocess.run(
        [sys.executable, "-c", BATCH_PROBE],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["openai", "gpt-test", False, True]
