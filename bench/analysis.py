"""From a run's probes and job rows to latencies, CPU per job and profiles."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import FEATURE_TASKS
from stats import pct, quantile_curve

# ----------------------------------------------------------------------------- analysis


@dataclass
class Probes:
    """The probe records of one scenario, indexed by job."""

    stage: dict[str, dict[str, tuple[float, float, Any]]]
    accept_by_job: dict[str, tuple[float, float]]  # job id -> (accept start, accept seconds)
    fake_first: dict[str, float]  # conversation id -> fake LLM's first delta sent
    sql: dict[str, Counter[str]]
    redis: dict[str, Counter[str]]

    @classmethod
    def index(cls, probes: list[list[Any]], t0: float, t1: float) -> Probes:
        out = cls(defaultdict(dict), {}, {}, defaultdict(Counter), defaultdict(Counter))
        for name, key, t_end, seconds, extra in probes:
            if name in ("sql", "redis"):
                # Counts, flushed every 0.25 s and stamped with the flush time.
                if t0 <= t_end < t1:
                    (out.sql if name == "sql" else out.redis)[str(extra)][key] += int(seconds)
            elif name == "bridge_accept" and isinstance(extra, list):
                out.accept_by_job.setdefault(extra[0], (extra[1], seconds))
            elif name == "fake_first_token":
                out.fake_first.setdefault(key, t_end)
            elif name in ("task_start", "task_run"):
                if extra == "vamu.notify.deliver":
                    name = "notify_" + name
                elif extra not in FEATURE_TASKS and not str(extra).isdigit():
                    continue  # other tasks (sweeps, reapers)
                out.stage[name].setdefault(key, (t_end, seconds, extra))
            elif key is not None:
                out.stage[name].setdefault(key, (t_end, seconds, extra))
        return out


def _completions(events: list[list[Any]], kind: str) -> tuple[dict[str, float], set[str],
                                                               dict[str, float], list[float]]:
    """Completion time per job id, failed ids, first chunk per conversation, all completions."""
    done_events = {"inspiration-ready", "ai-job-failed"} if kind == "inspiration" else {
        "chat-reply-ready", "ai-job-failed"}
    done_at: dict[str, float] = {}
    failed: set[str] = set()
    chunk0: dict[str, float] = {}
    completions: list[float] = []
    for event, job_id, seq, t, conversation in events:
        if event in done_events and job_id and job_id not in done_at:
            done_at[job_id] = t
            completions.append(t)
            if event == "ai-job-failed":
                failed.add(job_id)
        elif event == "chat-chunk" and seq == 0 and conversation and conversation not in chunk0:
            chunk0[conversation] = t
    return done_at, failed, chunk0, completions


def _job_latencies(lat: dict[str, list[float]], job_id: str, t_add: float, row: dict[str, Any],
                   recv: float | None, pr: Probes) -> None:
    st = pr.stage
    if recv is not None:
        lat["end_to_end"].append(recv - t_add)
    if row["finished"] and row["created"]:
        lat["row_created_to_finished"].append(float(row["finished"]) - float(row["created"]))
    start = st["task_start"].get(job_id)
    if start:
        lat["bridge_hop"].append(start[0] - t_add)
    accept = pr.accept_by_job.get(job_id)
    if accept:
        lat["bridge_pickup"].append(accept[0] - t_add)
        lat["bridge_accept"].append(accept[1])
    sent = st["celery_send"].get(job_id)
    if sent and start:
        lat["queue_wait"].append(start[0] - sent[0])
    for name in ("db_start", "context_fetch", "llm", "db_write", "llm_stream"):
        rec = st[name].get(job_id)
        if rec:
            lat[name].append(rec[1])
    run = st["task_run"].get(job_id)
    if run:
        lat["worker_task"].append(run[1])
    write, pub = st["db_write"].get(job_id), st["notify_publish"].get(job_id)
    if write and recv is not None:
        lat["notification"].append(recv - write[0])
    # From the start of the PUBLISH call: an asyncio caller resumes when the event loop gets
    # round to it, which can be after the client already has the event.
    if pub and recv is not None:
        lat["socketio_relay"].append(recv - (pub[0] - pub[1]))
    if write and pub:
        lat["notify_task_hop"].append(pub[0] - pub[1] - write[0])


def _chat_latencies(lat: dict[str, list[float]], job_id: str, chunk0: dict[str, float],
                    pr: Probes) -> None:
    emit = pr.stage["chunk_emit"].get(job_id)
    if not emit:
        return
    conversation = emit[2]
    first = pr.fake_first.get(conversation)
    client = chunk0.get(conversation)
    worker_delta = pr.stage["llm_first_delta"].get(job_id)
    if first is not None and client is not None:
        lat["first_chunk_after_first_token"].append(client - first)
    if first is not None and worker_delta is not None:
        lat["first_token_to_worker"].append(worker_delta[0] - first)
    # From the start of `ChunkSink.chunk` (XADD + EXPIRE, then PUBLISH): the worker thread may
    # get the GIL back after the client already has the chunk.
    sink_start = emit[0] - emit[1]
    if worker_delta is not None:
        lat["worker_delta_to_sink"].append(sink_start - worker_delta[0])
    if client is not None:
        lat["sink_to_client"].append(client - sink_start)


def analyse(data: dict[str, Any], rows: list[dict[str, Any]], probes: list[list[Any]], *,
            kind: str) -> dict[str, Any]:
    meta = data["meta"]
    t0, t1 = meta["measureAt"], meta["drainAt"]
    window = max(1e-9, t1 - t0)
    done_at, failed, chunk0, completions = _completions(data["events"], kind)
    added = {str(a[0]): a[1] for a in data["adds"]}
    by_ref = {r["source_ref"]: r for r in rows if r["source_ref"]}
    # Job id -> its add time and row, for the jobs added inside the measured window.
    in_window: dict[str, tuple[float, dict[str, Any]]] = {}
    for bull_id, t_add in added.items():
        row = by_ref.get(f"bullmq:vamu-ai:{bull_id}")
        if row is not None and t0 <= t_add < t1:
            in_window[str(row["id"])] = (t_add, row)
    pr = Probes.index(probes, t0, t1)
    lat: dict[str, list[float]] = defaultdict(list)
    for job_id, (t_add, row) in in_window.items():
        _job_latencies(lat, job_id, t_add, row, done_at.get(job_id), pr)
        # A job still unfinished when the driver gave up counts with the time it had waited
        # so far: percentiles over these are lower bounds, honest about an overload.
        lat["end_to_end_at_least"].append(done_at.get(job_id, meta["end"]) - t_add)
        if kind == "chat":
            _chat_latencies(lat, job_id, chunk0, pr)
    completed_in_window = sum(1 for t in completions if t0 <= t < t1)
    start_all = meta["start"]
    timeline_adds: Counter[int] = Counter(int(t - start_all) for t in added.values())
    timeline_done: Counter[int] = Counter(int(t - start_all) for t in completions)
    horizon = int(meta["end"] - start_all) + 1
    throughput: dict[str, Any] = {
        "window_s": round(window, 3),
        "adds_in_window": sum(1 for t in added.values() if t0 <= t < t1),
        "completed_in_window": completed_in_window,
        "jobs_per_s": round(completed_in_window / window, 2),
    }
    if meta.get("mode") == "closed" and lat["end_to_end"] and not meta["unfinished"]:
        # Little's law: a closed loop of N jobs whose round takes T s carries N / T jobs/s.
        # A cross-check of the window's count, which a loop still moving in bunches skews by
        # where the window's edges fall.
        mean_s = sum(lat["end_to_end"]) / len(lat["end_to_end"])
        throughput["littles_law_jobs_per_s"] = round(meta["inFlight"] / mean_s, 2)
    return {
        "throughput": throughput,
        "counts": {"added": meta["added"], "completed": meta["completed"],
                   "unfinished": meta["unfinished"], "failed": len(failed),
                   "add_errors": meta["addErrors"], "window_jobs": len(in_window),
                   "window_statuses": dict(Counter(r["status"] for _, r in in_window.values()))},
        "sql_per_job": _per_job(pr.sql, completed_in_window),
        "redis_commands_per_job": _per_job(pr.redis, completed_in_window),
        "overloaded_at_s": (round(meta["overloadedAt"] - start_all, 2)
                            if meta.get("overloadedAt") else None),
        "latency_ms": {k: pct(v) for k, v in sorted(lat.items())},
        "e2e_quantiles_ms": quantile_curve(lat["end_to_end"]),
        "timeline": {"t0_s": round(t0 - start_all, 3), "t1_s": round(t1 - start_all, 3),
                     "adds_per_s": [timeline_adds.get(i, 0) for i in range(horizon)],
                     "done_per_s": [timeline_done.get(i, 0) for i in range(horizon)]},
    }


def _per_job(counts: dict[str, Counter[str]], jobs: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for role, c in sorted(counts.items()):
        row = {k: round(n / max(1, jobs), 2) for k, n in c.most_common()}
        out[role] = {"total": round(sum(c.values()) / max(1, jobs), 2), **row}
    return out


# ----------------------------------------------------------------------------- profile


# Operations of interest, by a function that appears in their stacks (inclusive share).
FOCUS = [
    ("Celery: consumer loop, message handling", "asynloop ("),
    ("Celery: task execution (all of the task)", "build_tracer.<locals>.trace_task"),
    ("Celery: task events to the broker", "EventDispatcher.send"),
    ("store: start_attempt", "SqlAlchemyJobStore.start_attempt"),
    ("store: succeed (result + outbox)", "SqlAlchemyJobStore.succeed"),
    ("store: get_job (all callers)", "SqlAlchemyJobStore.get_job"),
    ("  get_job from the cancel checkpoint", "cancel_checkpoint.<locals>.check"),
    ("  get_job from _count_outcome (metrics)", "_count_outcome"),
    ("store: pending_notifications", "SqlAlchemyJobStore.pending_notifications"),
    ("store: delivering (outbox row lock)", "SqlAlchemyJobStore.delivering"),
    ("store: find_job", "SqlAlchemyJobStore.find_job"),
    ("store: create_job", "SqlAlchemyJobStore.create_job"),
    ("SQLAlchemy pool pre-ping", "_do_ping"),
    ("NestJS API client (httpx2)", "HttpNestApiClient.get_context"),
    ("OpenAI SDK call", "OpenAIProvider.complete"),
    ("notifications after the commit (inline delivery)", "send_notifications"),
    ("Celery send_task (bridge)", "CelerySender.send"),
    ("Socket.IO emit (Redis PUBLISH)", "SocketIOTransport.send"),
    ("BullMQ worker: fetch next job", "Worker.getNextJob"),
    ("BullMQ worker: complete job", "moveToFinished"),
    ("logging", "Logger._log"),
]


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any] | None:
    """Top frames of a py-spy raw (collapsed) profile, skipping module imports at start-up."""
    if not path.exists():
        return None
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    focus: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any("_find_and_load" in f for f in frames):
            continue
        n = int(count)
        total += n
        for label, needle in FOCUS:
            if needle in stack:
                focus[label] += n
        names = [_frame_name(f) for f in frames]
        for name in set(names):
            inclusive[name] += n
        leaf[names[-1]] += n
        by_package[_package(frames[-1])] += n
    if not total:
        return None

    def share(c: Counter[str]) -> list[list[Any]]:
        return [[k, round(100 * v / total, 1)] for k, v in c.most_common(top)]

    return {"samples": total,
            "focus_pct": [[label, round(100 * focus[label] / total, 1)]
                          for label, _ in FOCUS if focus[label]],
            "inclusive_pct": share(inclusive), "self_pct": share(leaf),
            "leaf_package_pct": share(by_package)}


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _frame_name(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file")
    short = file
    for marker in ("site-packages/", "/vamu_tasks/", "/workers/", "/bench/"):
        if marker in file:
            short = (marker.strip("/") + "/" if marker != "site-packages/" else "") + \
                file.split(marker, 1)[1]
            break
    else:
        short = file.rsplit("/", 1)[-1]
    return f"{m.group('func')} ({short})"


def _package(frame: str) -> str:
    m = _FRAME.match(frame)
    file = m.group("file") if m else frame
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    for name in ("vamu_tasks", "workers", "bench"):
        if f"/{name}/" in file:
            return name
    stem = file.rsplit("/", 1)[-1].removesuffix(".py")
    parent = file.rsplit("/", 2)[-2] if file.count("/") >= 2 else ""
    if parent and parent not in ("lib", "python3.11"):
        return f"stdlib:{parent}"
    return f"stdlib:{stem}"
