"""Running `vamu-tasks` as an operator would, against a test stack's settings."""

from __future__ import annotations

import os
import subprocess
import sys


def vamu(env: dict[str, str], *args: str, input: str | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "vamu-tasks"), *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout,
        input=input,
    )
