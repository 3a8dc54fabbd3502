"""One system under test: the processes of vamu-tasks or of a baseline, and their settings."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness import (
    BASELINE_CONCURRENCY,
    BENCH,
    PY,
    PYSPY,
    SYSTEM_LABELS,
    Proc,
    log,
    stop_all,
)

if TYPE_CHECKING:  # scenarios imports this module
    from scenarios import Bench

# ----------------------------------------------------------------------------- stacks


@dataclass
class Stack:
    bench: Bench
    kind: str  # vamu | bullmq-python | celery-defaults
    workers: int = 1
    # None: the setting's default. The scaling scenario shrinks the pools to stay under
    # PostgreSQL's 100 connections with 4 LLM workers.
    pool_size: int | None = None
    profile: bool = False
    env: dict[str, str] = field(default_factory=dict)  # extra settings, e.g. for a what-if
    what_if: str = ""  # names the changed settings in the label
    procs: list[Proc] = field(default_factory=list)
    dirty: bool = False
    prefix: str = ""
    profiles: dict[str, Path] = field(default_factory=dict)
    # Jobs added over the stack's life (restarts included): the next scenario's first user.
    jobs_added: int = 0
    failed_seen: set[str] = field(default_factory=set)  # BullMQ failed jobs already counted

    @property
    def label(self) -> str:
        extra = f", {self.workers} LLM worker processes" if self.kind == "vamu" else ""
        if self.what_if:
            extra += f"; what-if: {self.what_if}"
        return SYSTEM_LABELS[self.kind] + extra

    def settings_env(self) -> dict[str, str]:
        """The settings this stack changes from the defaults (besides plumbing: URLs, keys)."""
        if self.kind == "celery-defaults":
            # Baseline (b) keeps the settings it always ran with (quota off, Socket.IO only).
            return {"VAMU_QUOTA_JOBS_PER_USER_PER_HOUR": "0", "VAMU_NOTIFY": "socketio",
                    **self.env}
        return dict(self.env)

    def start(self) -> None:
        b = self.bench
        self.prefix = b.new_prefix()
        env = {**b.base_env(self.prefix), **self.settings_env()}
        data_dir = Path(env["VAMU_DATA_DIR"])
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = [PY, str(BENCH / "probe.py")]
        plan: list[tuple[str, list[str], dict[str, str], str]] = []
        if self.kind in ("vamu", "celery-defaults"):
            plan.append(("bridge", [*probe, "bridge", "workers.bridge"], {}, "bridge ready"))
        if self.kind == "vamu":
            for i in range(1, self.workers + 1):
                pool = ({} if self.pool_size is None else
                        {"VAMU_DATABASE_POOL_SIZE": str(self.pool_size)})
                plan.append((f"llm{i}", [*probe, f"llm{i}", "workers.llm", "--hostname",
                                         f"llm{i}-{self.prefix}@%h"], pool, " ready."))
            plan.append(("notify", [*probe, "notify", "workers.notify", "--hostname",
                                    f"notify-{self.prefix}@%h"], {}, " ready."))
        elif self.kind == "celery-defaults":
            plan.append(("celery", [*probe, "celery", "celery", "-A", "vamu_tasks", "worker",
                                    "--pool", "prefork", "--concurrency", "2",
                                    "--prefetch-multiplier", "4",
                                    "--queues", "inspiration,chatbot,agent,notify",
                                    "--loglevel", "INFO", "--hostname",
                                    f"defaults-{self.prefix}@%h"], {}, " ready."))
        else:
            plan.append(("baseline", [PY, str(BENCH / "baseline_bullmq.py")],
                         {"BENCH_BASELINE_CONCURRENCY": str(BASELINE_CONCURRENCY),
                          "VAMU_DATABASE_POOL_SIZE": "20"}, "baseline ready"))
        started: list[tuple[Proc, str]] = []
        for name, argv, extra, ready in plan:
            profiled = False
            if self.profile:
                out = b.rundir / f"profile-{name}.txt"
                self.profiles[name] = out
                # --gil: only the thread holding the GIL, i.e. where Python burns CPU.
                argv = [PYSPY, "record", "--rate", str(b.args.profile_rate), "--gil",
                        "--format", "raw", "--full-filenames", "--nonblocking",
                        "--output", str(out), "--", *argv]
                profiled = True
            proc = b.spawn(name, "sut", argv, env={**env, **extra}, cwd=data_dir,
                           profiled=profiled)
            self.procs.append(proc)
            started.append((proc, ready))
        for proc, ready in started:
            proc.wait_log(ready, timeout=60)
        log(f"started {self.label} ({', '.join(p.name for p in self.procs)})")

    def stop(self) -> None:
        def sig_for(proc: Proc) -> int:
            # A Celery worker with a backlog would finish its reserved tasks first (warm
            # shutdown); SIGQUIT is its cold shutdown. The backlog's keys are deleted below.
            quick = self.dirty and proc.name != "bridge" and not proc.profiled
            return signal.SIGQUIT if quick else signal.SIGTERM

        stop_all(self.procs, sig_for=sig_for)
        self.procs.clear()
        self.bench.delete_keys(self.prefix)

    def restart(self) -> None:
        log(f"restarting {self.label}: the last scenario left unfinished jobs")
        self.stop()
        self.dirty = False
        self.start()
        self.bench.prime(self)
