"""`vamu-tasks demo` on embedded defaults, as a new user runs it after `make demo` installs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

# The demo starts its worker with `--hostname demo@%h`.
DEMO_WORKER = "--hostname demo@"


def processes_matching(pattern: str) -> list[str]:
    """`PID command line` of every process whose command line contains `pattern`."""
    # `--` ends pgrep's options: without it a pattern that starts with `--` is read as an
    # unknown option, pgrep exits 2 and prints nothing, and a leftover would go unseen.
    found = subprocess.run(["pgrep", "-f", "-a", "--", pattern], capture_output=True, text=True)
    # 0: some match, 1: none. Anything else is pgrep failing, which must not pass as "none".
    assert found.returncode in (0, 1), (found.returncode, found.stderr)
    return found.stdout.splitlines()


def pids(lines: list[str]) -> list[str]:
    return [line.split()[0] for line in lines]


def test_the_demo_runs_real_jobs_on_embedded_defaults_and_leaves_no_process(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAMU_", "OPENAI_", "ANTHROPIC_"))}
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "vamu-tasks"), "demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count(" succeeded") >= 2
    assert "error: user_not_found" in out
    assert "refused {'userId': 'u-ada', 'count': 42}: invalid_job" in out
    assert out.count("inspiration-ready to user:") == 2
    assert "ai-job-failed to user:u-nobody" in out
    assert processes_matching(DEMO_WORKER) == []


def test_the_leftover_check_reports_a_process_whose_command_line_names_the_demo_worker():
    # A harmless stand-in for a demo worker left running: python ignores the extra arguments.
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "--hostname", "demo@leftover"])
    try:
        found = processes_matching(DEMO_WORKER)
    finally:
        leftover.kill()
        leftover.wait(timeout=10)

    assert str(leftover.pid) in pids(found)
    assert str(leftover.pid) not in pids(processes_matching(DEMO_WORKER))
