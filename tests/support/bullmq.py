"""The NestJS side of the bridge tests: Node `bullmq` producing jobs, and the bridge process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

from tests.support.node import NODE_DIR, require_node_client, require_node_modules


def produce(redis_url: str, queue: str, jobs: list[dict[str, Any]], *, wait: bool = True,
            timeout_ms: int = 20000, prefix: str = "bull", sync: bool = False
            ) -> list[dict[str, Any]]:
    """Add `jobs` through the Node package `@vamu/ai-jobs` (`VamuAiJobs`; the `*Now` methods
    with `sync`), or with plain `Queue.add` for a job with `"raw": True`; with `wait`, return
    each job's outcome in order (tests/e2e/node/producer.js)."""
    node = require_node_modules()
    require_node_client()
    spec = {"redis": redis_url, "prefix": prefix, "queue": queue, "jobs": jobs, "wait": wait,
            "timeoutMs": timeout_ms, "sync": sync}
    done = subprocess.run(
        [str(node), str(NODE_DIR / "producer.js")], input=json.dumps(spec), cwd=NODE_DIR,
        capture_output=True, text=True, timeout=timeout_ms / 1000 + 60,
    )
    assert done.returncode == 0, done.stderr
    # Not splitlines(): JSON text may hold U+2028 or U+0085, which it would split on.
    lines = [json.loads(line) for line in done.stdout.split("\n") if line.strip()]
    assert lines[-1] == {"done": True}, done.stdout
    return sorted(lines[:-1], key=lambda r: r["index"])


class BridgeProcess:
    """`python -m workers.bridge`, stopped by its PID."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Self:
        offset = len(self.log_text())
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workers.bridge"], env=self.env, cwd=self.log_path.parent,
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while "bridge ready" not in self.log_text()[offset:]:
            if self.process.poll() is not None:
                raise RuntimeError(f"bridge exited early:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"bridge not ready:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.terminate()
