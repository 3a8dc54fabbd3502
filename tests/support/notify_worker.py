"""`python -m workers.notify` (housekeeping on unless `--no-beat`), stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.services import free_port, scrape


class NotifyWorker:
    """`python -m workers.notify`, stopped by its PID."""

    def __init__(self, env: dict[str, str], tmp: Path, name: str, *args: str) -> None:
        self.port = free_port()
        self.log = tmp / f"{name}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workers.notify", "--hostname", f"{name}@%h",
                 "--without-gossip", "--without-mingle", *args],
                env={**env, "VAMU_METRICS_PORT": str(self.port)}, cwd=tmp, stdout=out,
                stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while " ready." not in self.text():
            assert self.process.poll() is None, self.text()[-3000:]
            assert time.monotonic() < deadline, self.text()[-3000:]
            time.sleep(0.1)

    def metric(self, name: str, **labels: str) -> float:
        return scrape(self.port).get((name, tuple(sorted(labels.items()))), 0.0)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
