"""`vamu-tasks dev`: every process on this machine's PostgreSQL and Redis, in one terminal.

It creates the database if it is missing and migrates it, then starts the LLM worker, the
notify worker, the bridge and Flower with one environment (Redis databases as in
docker-compose.yml, Socket.IO notifications on), prints where everything is and what NestJS
must match, and on Ctrl-C or SIGTERM stops the processes it started, by their PIDs.

Settings it does not set (the LLM keys and provider, `VAMU_API_BASE_URL`, key prefixes, ...)
come from the environment and the `.env` of the working directory, as for every process.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import IO
from urllib.parse import urlsplit

import click
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/vamu_dev"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
# As docker-compose.yml: the Celery broker in database 0; BullMQ, the quota counters and the
# chat replay streams in database 1 (VAMU_REDIS_URL), which NestJS's BullMQ must use too.
DEFAULT_BROKER_DB = 0
DEFAULT_APP_DB = 1
DEFAULT_NOTIFY = "socketio,log"
DEFAULT_FLOWER_PORT = 5555
# Each process needs a port of its own on one host: llm +1, notify +2, bridge +3, the ports of
# the scrape config in docs/operations.md.
DEFAULT_METRICS_BASE = 9100
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0


class DevError(Exception):
    """Something to fix before the processes can start; the message says what, in one line."""


@dataclass(frozen=True)
class DevOptions:
    database_url: str = DEFAULT_DATABASE_URL
    redis: str = DEFAULT_REDIS
    broker_db: int = DEFAULT_BROKER_DB
    app_db: int = DEFAULT_APP_DB
    notify: str = DEFAULT_NOTIFY
    flower_port: int = DEFAULT_FLOWER_PORT
    metrics_base: int | None = DEFAULT_METRICS_BASE
    ready_timeout_s: float = READY_TIMEOUT_S
    stop_timeout_s: float = STOP_TIMEOUT_S

    @property
    def broker_url(self) -> str:
        return f"{self.redis.rstrip('/')}/{self.broker_db}"

    @property
    def redis_url(self) -> str:
        return f"{self.redis.rstrip('/')}/{self.app_db}"


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    module: str
    ready_line: str | None  # a line the process prints once it is ready
    metrics_offset: int | None  # its metrics port is the base plus this


SPECS = [
    ProcessSpec("llm", "workers.llm", " ready.", 1),
    ProcessSpec("notify", "workers.notify", " ready.", 2),
    ProcessSpec("bridge", "workers.bridge", "bridge ready", 3),
    ProcessSpec("flower", "workers.flower", None, None),  # ready when /healthcheck answers
]


def shared_environment(options: DevOptions) -> dict[str, str]:
    """The settings every process gets alike (the environment and .env supply the rest)."""
    return {
        "VAMU_DATABASE_URL": options.database_url,
        "VAMU_BROKER_URL": options.broker_url,
        "VAMU_REDIS_URL": options.redis_url,
        "VAMU_NOTIFY": options.notify,
        "VAMU_FLOWER_PORT": str(options.flower_port),
        # Flower binds 127.0.0.1 then; a VAMU_FLOWER_PASSWORD from the environment still applies.
        "VAMU_FLOWER_INSECURE_LOCAL": "true",
        # The output goes through a pipe: unbuffered, so lines show up as they are written.
        "PYTHONUNBUFFERED": "1",
    }


def process_environment(options: DevOptions, spec: ProcessSpec) -> dict[str, str]:
    """What one process gets on top of `shared_environment`: its own metrics port, or none."""
    if options.metrics_base is None or spec.metrics_offset is None:
        return {"VAMU_METRICS_PORT": ""}  # empty counts as unset, whatever .env says
    return {"VAMU_METRICS_PORT": str(options.metrics_base + spec.metrics_offset)}


# --- before the processes: PostgreSQL and Redis ---------------------------------------------


def ensure_database(database_url: str) -> bool:
    """Create the URL's PostgreSQL database if it does not exist; True when it was created.

    Asks through the server's `postgres` maintenance database, as `createdb` does.
    """
    url = sa.make_url(database_url)
    if url.get_backend_name() != "postgresql" or not url.database:
        raise DevError(f"vamu-tasks dev runs on PostgreSQL; got {url.render_as_string()}")
    admin = sa.create_engine(
        url.set(database="postgres"),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )
    exists = sa.text("SELECT 1 FROM pg_database WHERE datname = :name")
    try:
        with admin.connect() as conn:
            if conn.execute(exists, {"name": url.database}).first() is not None:
                return False
            name = conn.dialect.identifier_preparer.quote(url.database)
            try:
                conn.execute(sa.text(f"CREATE DATABASE {name}"))
            except SQLAlchemyError:
                # Someone else may have created it in the meantime: that is fine too.
                if conn.execute(exists, {"name": url.database}).first() is None:
                    raise
            return True
    except SQLAlchemyError as exc:
        problem = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["failed"])[0]
        where = url.set(database="postgres").render_as_string(hide_password=True)
        raise DevError(
            f"cannot create database {url.database!r} through {where}: {problem}"
        ) from None
    finally:
        admin.dispose()


def migrate(database_url: str) -> None:
    from vamu_tasks.store.migrate import DatabaseNotReady, check_connection, upgrade

    try:
        check_connection(database_url)
    except DatabaseNotReady as exc:
        raise DevError(str(exc)) from None
    upgrade(database_url)


def check_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise DevError(f"cannot reach Redis at {_hide_password(url)}: {exc}") from None
    finally:
        client.close()


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


# --- the processes --------------------------------------------------------------------------


@dataclass
class Running:
    spec: ProcessSpec
    process: subprocess.Popen[str]
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None


class Output:
    """Every process's lines on our stdout, prefixed with its name (one writer at a time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        with self._lock:
            click.echo(f"{name:<6} | {text}")

    def say(self, text: str) -> None:
        with self._lock:
            click.echo(text)


def _pump(running: Running, stream: IO[str], output: Output) -> None:
    for raw in stream:
        line = raw.rstrip("\n")
        output.line(running.spec.name, line)
        if running.spec.ready_line is not None and running.spec.ready_line in line:
            running.ready.set()
    stream.close()


def start(spec: ProcessSpec, env: dict[str, str], output: Output) -> Running:
    process = subprocess.Popen(
        [sys.executable, "-m", spec.module],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        errors="replace",
        # Its own process group: Ctrl-C reaches only this command, which then stops each
        # process once, in order; and a process that will not stop can be killed with its
        # children (a prefork pool, if asked for) by its group, whose id is its PID.
        start_new_session=True,
    )
    running = Running(spec, process)
    assert process.stdout is not None
    running.reader = threading.Thread(
        target=_pump, args=(running, process.stdout, output), name=f"dev-{spec.name}", daemon=True
    )
    running.reader.start()
    return running


def flower_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def wait_ready(
    processes: list[Running], flower_probe: Callable[[], bool], deadline: float, stop: StopRequest
) -> None:
    while True:
        for running in processes:
            code = running.process.poll()
            if code is not None:
                raise DevError(f"{running.spec.name} exited with code {code} while starting")
            if running.spec.ready_line is None and not running.ready.is_set() and flower_probe():
                running.ready.set()
        if all(running.ready.is_set() for running in processes):
            return
        if stop.requested.is_set():
            raise DevError("stopped while starting")
        if time.monotonic() > deadline:
            late = ", ".join(r.spec.name for r in processes if not r.ready.is_set())
            raise DevError(f"not ready in time: {late}")
        stop.requested.wait(0.2)


class StopRequest:
    """Ctrl-C or SIGTERM: the first asks the processes to stop, a second one kills them."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.requested.set()


def stop_all(processes: list[Running], stop: StopRequest, timeout_s: float, output: Output) -> None:
    """SIGTERM each process (a warm shutdown: jobs in hand finish), then wait; whatever is left
    after `timeout_s`, or after a second Ctrl-C, is killed with its process group."""
    first_count = stop.count
    for running in reversed(processes):
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for running in processes:
        while running.process.poll() is None:
            if time.monotonic() > deadline or stop.count > first_count + 1:
                output.say(
                    f"vamu-tasks dev: killing {running.spec.name} (pid {running.process.pid})"
                )
                _kill_group(running.process.pid)
                running.process.wait()
                break
            time.sleep(0.1)
    # Whatever is left in the groups of the processes we started (pool children,
    # if its worker was killed): each group's id is the PID of the process we started.
    for running in processes:
        _kill_group(running.process.pid)
        if running.reader is not None:
            running.reader.join(timeout=5)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


# --- what to print --------------------------------------------------------------------------


def summary(options: DevOptions, processes: list[Running], created: bool) -> str:
    from vamu_tasks.settings import Settings

    settings = Settings()  # what the processes read: same environment, same .env
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        provider: str = settings.provider_name()
    if warned:  # the offline stand-in, for want of a key
        provider += " (no OPENAI_API_KEY or ANTHROPIC_API_KEY set)"
    redis_parts = urlsplit(options.redis_url)
    host, port = redis_parts.hostname or "127.0.0.1", redis_parts.port or 6379
    database = sa.make_url(options.database_url).render_as_string(hide_password=True)
    login = (
        f"login {settings.flower_user} / VAMU_FLOWER_PASSWORD"
        if settings.flower_password
        else "no login: VAMU_FLOWER_INSECURE_LOCAL"
    )
    if options.metrics_base is None:
        metrics = "off"
    else:
        metrics = ", ".join(
            f"{r.spec.name} http://127.0.0.1:{options.metrics_base + r.spec.metrics_offset}/metrics"
            for r in processes
            if r.spec.metrics_offset is not None
        )
    api = settings.api_base_url or "unset: the bundled sample users and events"
    prefix = settings.broker_key_prefix or "none"
    lines = [
        "",
        "vamu-tasks dev: the LLM worker, the notify worker, the bridge and Flower are up.",
        "Ctrl-C (or SIGTERM) stops them; a second Ctrl-C kills what is left.",
        "",
        f"  database     {database} ({'created, ' if created else ''}migrated to head)",
        f"  broker       {_hide_password(options.broker_url)} (Celery; key prefix {prefix})",
        f"  redis        {_hide_password(options.redis_url)} (BullMQ, quota counters, "
        "chat replay streams)",
        f"  notify       {','.join(settings.notify)}",
        f"  LLM          {provider}",
        f"  NestJS API   {api}",
        f"  Flower       http://127.0.0.1:{options.flower_port} ({login})",
        f"  metrics      {metrics}",
        "  processes    " + ", ".join(f"{r.spec.name} pid {r.process.pid}" for r in processes),
        "",
        "Other commands (vamu-tasks enqueue, jobs, celery inspect) need the same settings:",
        f"  export {shlex.join(_shared_exports(options, settings.broker_key_prefix))}",
        "",
        "What NestJS must match:",
        f"  BullMQ       connection {{ host: '{host}', port: {port}, db: {options.app_db} }}, "
        f"prefix '{settings.bullmq_prefix}', queues '{settings.bullmq_queue}' and "
        f"'{settings.bullmq_sync_queue}'",
        f"  Socket.IO    @socket.io/redis-adapter on {host}:{port} with key "
        f"'{settings.socketio_key}', rooms user:{{userId}}",
        f"  chat replay  XRANGE vamu:chat:{{jobId}} in Redis database {options.app_db}",
        "  internal API serve docs/openapi/internal-api.json at VAMU_API_BASE_URL, "
        "checking VAMU_API_TOKEN",
        "",
    ]
    return "\n".join(lines)


def _shared_exports(options: DevOptions, broker_key_prefix: str | None) -> list[str]:
    """`NAME=value` for the settings another shell needs to reach the same system."""
    values = {
        "VAMU_DATABASE_URL": sa.make_url(options.database_url).render_as_string(hide_password=True),
        "VAMU_BROKER_URL": _hide_password(options.broker_url),
        "VAMU_REDIS_URL": _hide_password(options.redis_url),
        "VAMU_NOTIFY": options.notify,
    }
    if broker_key_prefix:
        values["VAMU_BROKER_KEY_PREFIX"] = broker_key_prefix
    return [f"{name}={value}" for name, value in values.items()]


def run_dev(options: DevOptions) -> int:
    """Prepare the database, start the four processes, and stop them when asked. Exit code."""
    output = Output()
    stop = StopRequest()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # This command's own environment becomes the processes' one, so the summary's Settings()
    # reads exactly what they read.
    os.environ.update(shared_environment(options))
    processes: list[Running] = []
    try:
        check_redis(options.broker_url)
        check_redis(options.redis_url)
        created = ensure_database(options.database_url)
        output.say(f"vamu-tasks dev: database {'created' if created else 'exists'}; migrating")
        migrate(options.database_url)
        for spec in SPECS:
            env = {**os.environ, **process_environment(options, spec)}
            processes.append(start(spec, env, output))
        deadline = time.monotonic() + options.ready_timeout_s
        wait_ready(processes, lambda: flower_answers(options.flower_port), deadline, stop)
        output.say(summary(options, processes, created))
        while not stop.requested.wait(0.5):
            for running in processes:
                code = running.process.poll()
                if code is not None:
                    raise DevError(f"{running.spec.name} exited with code {code}")
        output.say("vamu-tasks dev: stopping")
        return 0
    except DevError as exc:
        output.say(f"vamu-tasks dev: {exc}; stopping")
        return 1
    finally:
        stop_all(processes, stop, options.stop_timeout_s, output)
        if processes:
            output.say("vamu-tasks dev: all processes stopped")
