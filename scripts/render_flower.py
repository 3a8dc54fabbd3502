"""Render Flower's dashboard, with tasks of every feature, to PNGs in docs/img/.

    .venv/bin/python scripts/render_flower.py [--broker-url URL] [--out docs/img]
    make flower-screenshot

Demo-like: SQLite in a temporary directory, the offline LLM and the bundled sample users, but a
Redis broker (default redis://127.0.0.1:6379/0) under a throwaway key prefix, removed at the end.
Not the embedded filesystem broker: its writes are not atomic (kombu 5.7), and with several
processes on it a reader sometimes gets an empty message file, which stops a worker or makes
Flower drop events.

The script starts the real entry points (`python -m workers.llm`, `python -m workers.notify`,
`python -m workers.flower` with a throwaway password), runs a few jobs of each feature with
`vamu-tasks enqueue ... --wait`, waits until Flower has seen every task end, and has headless
Chromium load the pages with the login in the URL. Needs /usr/bin/chromium (`apt-get install
chromium`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
USER = "admin"
JOBS: list[list[str]] = [
    ["inspiration", "--user-id", "u-ada", "--count", "3"],
    ["inspiration", "--user-id", "u-bruno", "--count", "2", "--hint", "something outdoors"],
    ["inspiration", "--user-id", "u-nobody"],  # not a sample user: the job fails, the task not
    ["chatbot", "--user-id", "u-ada", "--conversation-id", "c-demo-1", "--message", "Hi!"],
    ["chatbot", "--user-id", "u-chioma", "--conversation-id", "c-demo-2", "--message", "Ideas?"],
    ["agent", "--user-id", "u-ada", "--goal", "Find me a jazz night this weekend"],
    ["agent", "--user-id", "u-bruno", "--goal", "Something outdoors on Sunday"],
]
# The arguments instead of the uuid (the job id, also in kwargs): they show ids only.
TASK_COLUMNS = "name,state,args,kwargs,received,runtime"
# No proxy between this script and Flower on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(
    data_dir: Path, broker_url: str, key_prefix: str, port: int, password: str
) -> dict[str, str]:
    # Nothing from the caller's VAMU_*, Flower or LLM settings: keys must not be used or shown.
    dropped = ("VAMU_", "FLOWER_", "OPENAI_", "ANTHROPIC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    return env | {
        "VAMU_DATA_DIR": str(data_dir),
        "VAMU_BROKER_URL": broker_url,
        "VAMU_BROKER_KEY_PREFIX": key_prefix,
        "VAMU_DATABASE_URL": f"sqlite:///{data_dir / 'vamu.db'}",
        "VAMU_LLM_PROVIDER": "offline",
        "VAMU_NOTIFY": "log",
        "VAMU_LLM_CONCURRENCY": "8",
        "VAMU_NOTIFY_CONCURRENCY": "4",
        "VAMU_FLOWER_PASSWORD": password,
        "VAMU_FLOWER_PORT": str(port),
        "VAMU_FLOWER_ADDRESS": "127.0.0.1",
    }


class Stack:
    """The processes this script starts, each stopped by its PID."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir, self.env = data_dir, env
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> None:
        with open(self.data_dir / f"{name}.log", "wb") as log:
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, *args],
                    env=self.env,
                    cwd=self.data_dir,  # not the repo: a developer's .env must not apply
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def check_running(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise SystemExit(f"{process.args!r} exited; logs in {self.data_dir}")

    def run(self, *args: str, timeout: float = 120) -> int:
        done = subprocess.run(
            [sys.executable, *args],
            env=self.env,
            cwd=self.data_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return done.returncode

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def get(url: str, password: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"{USER}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, ""
    except OSError:
        return 0, ""


def wait_until(what: str, check: Any, stack: Stack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        stack.check_running()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}; logs in {stack.data_dir}")
        time.sleep(0.3)


def screenshot(url: str, path: Path, profile: Path) -> None:
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--window-size=1400,900",
            # Let the page's own requests (the tasks table is loaded by XHR) finish first.
            "--virtual-time-budget=8000",
            f"--screenshot={path}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    if not path.exists() or path.stat().st_size < 10_000:
        raise SystemExit(f"Chromium did not write a usable {path}")


def is_redis(broker_url: str) -> bool:
    return broker_url.startswith(("redis://", "rediss://"))


def check_redis(broker_url: str) -> None:
    if not is_redis(broker_url):
        return
    client = redis.Redis.from_url(broker_url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SystemExit(
            f"no Redis at {broker_url} ({exc}); start one or pass --broker-url"
        ) from None
    finally:
        client.close()


def delete_keys(broker_url: str, key_prefix: str) -> None:
    if not is_redis(broker_url):
        return
    client = redis.Redis.from_url(broker_url)
    try:
        keys = list(client.scan_iter(match=f"{key_prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def render(out: Path, broker_url: str) -> None:
    check_redis(broker_url)
    data_dir = Path(tempfile.mkdtemp(prefix="vamu-flower-"))
    port, password = free_port(), secrets.token_urlsafe(12)
    key_prefix = f"vamu-flower-shot-{secrets.token_hex(4)}:"
    stack = Stack(data_dir, environment(data_dir, broker_url, key_prefix, port, password))
    base = f"http://127.0.0.1:{port}"
    try:
        if stack.run("-m", "vamu_tasks.cli", "db", "upgrade") != 0:
            raise SystemExit("vamu-tasks db upgrade failed")
        stack.start("worker-llm", "-m", "workers.llm")
        stack.start("worker-notify", "-m", "workers.notify")
        stack.start("flower", "-m", "workers.flower", f"--tasks_columns={TASK_COLUMNS}")

        wait_until("Flower", lambda: get(f"{base}/healthcheck", None)[0] == 200, stack)

        workers: list[str] = []

        def both_workers_online() -> bool:
            metrics = get(f"{base}/metrics", password)[1]
            workers[:] = [
                line.split('"')[1]
                for line in metrics.splitlines()
                if line.startswith("flower_worker_online{") and line.endswith(" 1.0")
            ]
            return len(workers) >= 2

        wait_until("both workers in Flower", both_workers_online, stack)

        for job in JOBS:
            code = stack.run("-m", "vamu_tasks.cli", "enqueue", *job, "--wait", "--timeout", "60")
            print(f"  vamu-tasks enqueue {' '.join(job)}: exit {code}")

        tasks: list[dict[str, Any]] = []

        def all_tasks_ended() -> bool:
            status, body = get(f"{base}/api/tasks", password)
            tasks[:] = json.loads(body).values() if status == 200 else []
            names = {t["name"] for t in tasks}
            ended = all(t["state"] in ("SUCCESS", "FAILURE") for t in tasks)
            return ended and {"vamu.agent.run", "vamu.notify.deliver"} <= names

        wait_until("the tasks in Flower", all_tasks_ended, stack)

        # The feature tasks (the LLM worker's); the notify worker's deliveries would fill the
        # first page otherwise.
        (llm_worker,) = [w for w in workers if w.startswith("llm@")]
        # And one agent run in full: what the goal and the answer look like to Flower.
        agent_run = next(t["uuid"] for t in tasks if t["name"] == "vamu.agent.run")
        pages = {
            f"/tasks?worker={llm_worker}": "flower-tasks.png",
            "/workers": "flower-workers.png",
            f"/task/{agent_run}": "flower-task.png",
        }
        out.mkdir(parents=True, exist_ok=True)
        for page, name in pages.items():
            profile = data_dir / f"chromium-{name}"
            screenshot(f"http://{USER}:{password}@127.0.0.1:{port}{page}", out / name, profile)
            print(f"wrote {out / name}")
    except BaseException:
        stack.stop()
        print(f"failed; the logs are kept in {data_dir}", file=sys.stderr)
        raise
    else:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        delete_keys(broker_url, key_prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(
            f"{CHROMIUM} not found: install Chromium first (Debian/Ubuntu: "
            "`sudo apt-get install -y chromium`)"
        )
    render(args.out.resolve(), args.broker_url)


if __name__ == "__main__":
    main()
