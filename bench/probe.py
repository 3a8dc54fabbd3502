"""Stage timers inside the real vamu-tasks processes, for the benchmark only.

`python bench/probe.py ROLE MODULE [ARGS...]` wraps a handful of package functions with
timers, then runs `python -m MODULE ARGS...` unchanged (for example `workers.llm`,
`workers.bridge` or `celery -A vamu_tasks worker ...`). Nothing else in the process changes:
each wrapper calls the original and records `[stage, key, t_end, seconds, extra]`, with
`t_end` in Unix seconds (the same clock as the Node driver and the job rows). A background
thread appends the records to `$VAMU_BENCH_PROBE_DIR/ROLE-PID.jsonl` every 0.25 s, and
forked children (Celery prefork) get their own file.

What is timed (all wall clock, inside the process):

| stage            | around                                        | key            |
|------------------|-----------------------------------------------|----------------|
| bridge_accept    | `bridge.service.accept_job` (validate, find,  | BullMQ job id  |
|                  | insert the row, send the Celery task)         | (+ job id)     |
| celery_send      | `CelerySender.send`                           | job id         |
| task_start       | Celery `task_prerun` (the moment the task     | job/event id   |
|                  | body is about to run; extra = task name)      |                |
| task_run         | `task_prerun` to `task_postrun`               | job/event id   |
| db_start         | `SqlAlchemyJobStore.start_attempt`            | job id         |
| context_fetch    | `HttpNestApiClient.get_context`               | job id (trace) |
| llm              | `InstrumentedLLM.complete` (SDK call incl.)   | job id (trace) |
| llm_first_delta  | first `TextDelta` out of `InstrumentedLLM.stream` | job id     |
| llm_stream       | `InstrumentedLLM.stream`, start to end        | job id         |
| db_write         | `SqlAlchemyJobStore.succeed` (result + outbox) | job id        |
| chunk_emit       | `RedisChunkSink.chunk` for seq 0 (XADD + PUBLISH) | job id     |
| notify_publish   | `SocketIOTransport.send` (one Redis PUBLISH)  | job id         |
| sql (count)      | SQL statements, commits, pool checkouts       | verb           |
| redis (count)    | Redis commands sent (redis-py, sync and async) | command       |

Counts are kept in memory and written with each flush as `[kind, key, t_flush, n, role]`.

The overhead is two `perf_counter` calls and a list append per wrapped call.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import runpy
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

_records: list[list[Any]] = []
_role = "proc"
_dir = os.environ.get("VAMU_BENCH_PROBE_DIR", "")
_wake = threading.Event()


def record(stage: str, key: Any, t_end: float, seconds: float, extra: Any = None) -> None:
    _records.append([stage, None if key is None else str(key), t_end, seconds, extra])


_counts: dict[tuple[str, str], int] = {}


def count(kind: str, key: str) -> None:
    """A cheap counter; flushed as `[kind, key, t_flush, n, role]` (n in the seconds slot)."""
    k = (kind, key)
    _counts[k] = _counts.get(k, 0) + 1  # a lost increment under a thread race is noise


def flush() -> None:
    global _records, _counts
    if not _dir:
        return
    counts, _counts = _counts, {}
    now = time.time()
    _records.extend([kind, key, now, n, _role] for (kind, key), n in counts.items())
    batch, _records = _records, []
    if not batch:
        return
    with open(os.path.join(_dir, f"{_role}-{os.getpid()}.jsonl"), "a") as out:
        out.write("".join(json.dumps(r) + "\n" for r in batch))


def _flusher() -> None:
    while True:
        _wake.wait(0.25)
        try:
            flush()
        except Exception as exc:  # a bench helper must never take the process down
            print(f"probe flush failed: {exc}", file=sys.stderr)


def start_recorder(role: str) -> None:
    global _role
    _role = role
    threading.Thread(target=_flusher, name="bench-probe", daemon=True).start()
    atexit.register(flush)

    def in_child() -> None:
        global _records, _counts
        _records = []
        _counts = {}
        threading.Thread(target=_flusher, name="bench-probe", daemon=True).start()

    os.register_at_fork(after_in_child=in_child)


def _trace_job() -> str | None:
    from vamu_tasks.tracing import current_trace

    return current_trace().get("job")


def _wrap(owner: Any, name: str, stage: str, key_of: Callable[..., Any]) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            try:
                key = key_of(*args, **kwargs)
            except Exception:
                key = None
            record(stage, key, time.time(), elapsed)

    setattr(owner, name, timed)


def _install_stage_timers() -> None:
    from vamu_tasks.bridge import service as bridge_service
    from vamu_tasks.context.http import HttpNestApiClient
    from vamu_tasks.metrics import InstrumentedLLM
    from vamu_tasks.notify.chunks import RedisChunkSink
    from vamu_tasks.notify.transports import SocketIOTransport
    from vamu_tasks.sender import CelerySender
    from vamu_tasks.store.repository import SqlAlchemyJobStore

    # accept_job is imported by name in bridge/worker.py: patch it before that module loads.
    original_accept = bridge_service.accept_job

    @functools.wraps(original_accept)
    def accept_job(*args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        started = time.perf_counter()
        accepted = original_accept(*args, **kwargs)
        record("bridge_accept", kwargs.get("bullmq_job_id"), time.time(),
               time.perf_counter() - started, [str(accepted.job_id), t0])
        return accepted

    bridge_service.accept_job = accept_job  # type: ignore[assignment]
    _wrap(CelerySender, "send", "celery_send", lambda self, spec, job_id, *a, **k: job_id)
    _wrap(SqlAlchemyJobStore, "start_attempt", "db_start", lambda self, job_id, *a, **k: job_id)
    _wrap(SqlAlchemyJobStore, "succeed", "db_write", lambda self, job_id, *a, **k: job_id)
    _wrap(HttpNestApiClient, "get_context", "context_fetch", lambda *a, **k: _trace_job())
    _wrap(InstrumentedLLM, "complete", "llm", lambda *a, **k: _trace_job())
    _wrap(SocketIOTransport, "send", "notify_publish", lambda self, note: note.job_id)

    original_chunk = RedisChunkSink.chunk

    @functools.wraps(original_chunk)
    def chunk(self: Any, item: Any) -> None:
        started = time.perf_counter()
        original_chunk(self, item)
        if item.seq == 0:
            record("chunk_emit", item.job_id, time.time(), time.perf_counter() - started,
                   item.conversation_id)

    RedisChunkSink.chunk = chunk  # type: ignore[method-assign]


def _install_stream_timers() -> None:
    from vamu_tasks.domain import TextDelta
    from vamu_tasks.metrics import InstrumentedLLM

    original_stream = InstrumentedLLM.stream

    @functools.wraps(original_stream)
    def stream(self: Any, request: Any) -> Iterator[Any]:
        job = _trace_job()
        started = time.perf_counter()
        first = True
        for item in original_stream(self, request):
            if first and isinstance(item, TextDelta):
                first = False
                record("llm_first_delta", job, time.time(), time.perf_counter() - started)
            yield item
        record("llm_stream", job, time.time(), time.perf_counter() - started)

    InstrumentedLLM.stream = stream  # type: ignore[method-assign]


def install_counters() -> None:
    import redis.asyncio.connection as redis_async_connection
    import redis.connection as redis_connection
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    # Round trips to PostgreSQL: each statement, and each pool checkout (with pool_pre_ping,
    # every checkout pings the server first).
    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        count("sql", statement.lstrip().split(None, 1)[0].upper())

    @event.listens_for(Engine, "commit")
    def _commit(*_: Any) -> None:
        count("sql", "COMMIT")

    @event.listens_for(Pool, "checkout")
    def _checkout(*_: Any) -> None:
        count("sql", "CHECKOUT")

    # The job path's statements go to psycopg without SQLAlchemy's events (store/direct.py).
    try:
        from vamu_tasks.store.direct import DirectConnection
    except ImportError:  # the code before they did
        pass
    else:
        execute = DirectConnection.execute

        @functools.wraps(execute)
        def _direct(self: Any, statement: Any, parameters: Any) -> Any:
            result = execute(self, statement, parameters)
            count("sql", self._compiled[statement].sql.lstrip().split(None, 1)[0].upper())
            return result

        DirectConnection.execute = _direct  # type: ignore[method-assign]

    # Commands this process sends to Redis (broker, BullMQ, emitter, streams), by name.
    def count_commands(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def pack(self: Any, *args: Any) -> Any:
            if args:
                command = args[0]
                command = command.decode() if isinstance(command, bytes) else str(command)
                count("redis", command.split(" ", 1)[0].upper())
            return original(self, *args)

        setattr(owner, name, pack)

    count_commands(redis_connection.PythonRespSerializer, "pack")
    count_commands(redis_async_connection.AbstractConnection, "pack_command")


def _task_key(kwargs: dict[str, Any] | None) -> str | None:
    ref = (kwargs or {}).get("ref")
    if isinstance(ref, dict):
        return ref.get("job_id") or ref.get("event_id")
    return getattr(ref, "job_id", None) or getattr(ref, "event_id", None)


def _install_task_signals() -> None:
    from celery.signals import task_postrun, task_prerun

    started: dict[str, float] = {}

    @task_prerun.connect(weak=False)
    def _prerun(task_id: str = "", task: Any = None, kwargs: Any = None, **_: Any) -> None:
        started[task_id] = time.perf_counter()
        record("task_start", _task_key(kwargs), time.time(), 0.0, getattr(task, "name", None))

    @task_postrun.connect(weak=False)
    def _postrun(task_id: str = "", task: Any = None, kwargs: Any = None, **_: Any) -> None:
        t0 = started.pop(task_id, None)
        if t0 is not None:
            record("task_run", _task_key(kwargs), time.time(), time.perf_counter() - t0,
                   getattr(task, "name", None))


def install() -> None:
    """Wrap the package functions listed in the module docstring, before the entry point runs."""
    _install_stage_timers()
    _install_stream_timers()
    install_counters()
    _install_task_signals()


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: probe.py ROLE MODULE [ARGS...]")
    role, module, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    start_recorder(role)
    if not os.environ.get("VAMU_BENCH_PROBE_OFF"):  # to check what the probes cost
        install()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
