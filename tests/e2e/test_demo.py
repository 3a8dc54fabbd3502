"""`vamu-tasks demo` on embedded defaults, as a new user runs it after `make demo` installs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


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
    leftovers = subprocess.run(["pgrep", "-f", "--hostname demo@"], capture_output=True,
                               text=True)
    assert leftovers.stdout.strip() == ""
