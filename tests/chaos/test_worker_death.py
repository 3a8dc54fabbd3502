"""1. Worker death: SIGKILL of pool children and of whole worker processes during 500 jobs.

Topology: the bridge, the notify worker (with beat: the reaper every 2 s, the outbox sweep), two
threads-pool LLM workers (concurrency 16 each, as `workers.llm` runs) and one prefork LLM worker
with two children. The Node producer adds 500 jobs (400 inspiration, 100 chat messages, each its
own conversation) at 15 a second; the fake LLM answers in 0.2 s. While they run, a fixed schedule
SIGKILLs the notify worker first (it runs the reaper; restarted at once), then prefork children
(the master forks new ones), whole threads workers and the whole prefork worker (each restarted
at once, as a supervisor would). Each kill waits (up to 3 s) for its victim to have jobs in hand.

Counted: rows and statuses in PostgreSQL, BullMQ outcomes, LLM requests per job at the fake LLM
(each request carries its job's token), outbox rows, chat messages, Socket.IO and webhook
deliveries (total and distinct ids), and for each job a killed process was running (its lease
owner at the moment of the kill), the time from the kill to the job running again (its next
LLM request; for a chat job whose reply was already stored, its commit).

The scenario runs once (module fixture); the tests below each check one promise on its counts.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.chaos.conftest import (
    HOST,
    Proc,
    Rig,
    bullmq_counts,
    listeners,
    record,
    rigs,
    socket_counts,
    start_all,
    wait_until,
)

pytestmark = pytest.mark.timeout(420)

JOBS = 500
CHATS = 100
RATE = 15.0
RECOVERY_WINDOW_S = 15.0
MAX_TWICE = 0.05
SETTLE_S = 90.0  # after the last job was added, how long the jobs get to end


def running_on(rig: Rig, pids: list[int]) -> list[str]:
    """Tokens of the jobs whose lease names one of these processes (an attempt's lease owner
    is "<host>:<pid>:<attempt>")."""
    patterns = [f"{HOST}:{pid}:%" for pid in pids]
    rows = rig.query("SELECT request FROM ai_jobs WHERE status = 'running' "
                     "AND lease_owner LIKE ANY(:patterns)", patterns=patterns)
    return [t for t in (rig.token_of(str(r[0])) for r in rows) if t]


@dataclass
class Outcome:
    figures: dict[str, Any]
    counts: Any
    recovery: list[float]
    unrecovered: list[str]
    stuck: list[tuple[str, str, int]]
    twice: list[str]
    socket: dict[str, int]
    alive: bool


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    with rigs(tmp_path_factory.mktemp("worker-death")) as make_rig, listeners() as listener:
        yield run_scenario(make_rig(), listener)


class Killer:
    """SIGKILLs on a schedule, each at a moment the victim has a job in hand (waiting up to
    5 s for one), and records which jobs each kill orphaned."""

    def __init__(self, rig: Rig, t0: float) -> None:
        self.rig = rig
        self.t0 = t0
        self.rng = random.Random(7)
        self.kills: list[dict[str, Any]] = []
        self.restarting: list[tuple[Proc, int]] = []

    def busy(self, pids: list[int]) -> bool:
        return bool(running_on(self.rig, pids))

    def child(self, proc: Proc) -> list[int]:
        kids: list[int] = []
        busy: list[int] = []

        def look() -> bool:
            kids[:] = proc.children()
            busy[:] = [k for k in kids if self.busy([k])]
            return bool(busy)

        wait_until(look, 3, 0.05)
        return [self.rng.choice(busy or kids)] if kids else []

    def whole(self, proc: Proc) -> list[int]:
        if not proc.alive:
            return []
        # A few jobs in hand if it gets there within 3 s, else at least one.
        if not wait_until(lambda: len(running_on(self.rig, [proc.pid, *proc.children()])) >= 3,
                          3, 0.05):
            wait_until(lambda: self.busy([proc.pid, *proc.children()]), 2, 0.05)
        return [proc.pid, *proc.children()]

    def run(self, schedule: list[tuple[float, str, Proc, str]]) -> None:
        for at, what, proc, how in schedule:
            time.sleep(max(0.0, self.t0 + at - time.monotonic()))
            # A restarted worker must be up before it is killed again.
            for pending in [r for r in self.restarting if r[0] is proc]:
                proc.wait_ready(pending[1], 90)
                self.restarting.remove(pending)
            if how == "idle":  # the notify worker: no jobs of its own in hand
                proc.kill()
                self.kills.append({"at": round(time.monotonic() - self.t0, 1), "what": what,
                                   "orphans": [], "t": time.monotonic(), "wall": time.time()})
                proc.start(90)  # restarted at once; the reaper runs in it, so wait for it
                continue
            is_whole = how == "whole"
            pids = self.whole(proc) if is_whole else self.child(proc)
            if not pids:
                continue
            killed_at = time.monotonic()
            if is_whole:
                proc.kill()
            else:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
            # After the kill, the rows still running under a dead process's lease are exactly
            # the jobs it orphaned (one that committed just before is not among them).
            orphans = running_on(self.rig, pids)
            if is_whole:
                self.restarting.append((proc, proc.launch()))  # at once, as a supervisor would
            self.kills.append({"at": round(killed_at - self.t0, 1), "what": what,
                               "orphans": orphans, "t": killed_at,
                               "wall": time.time() - (time.monotonic() - killed_at)})
        for proc, offset in self.restarting:
            proc.wait_ready(offset, 90)


def recovery_times(kills: list[dict[str, Any]], requests: dict[str, list[Any]],
                   finished: dict[str, float]) -> tuple[list[float], list[str], set[str]]:
    """Seconds from each kill to each job it orphaned running again: its next LLM request, or
    for a chat job whose reply was already stored (it makes no new request), its commit."""
    recovery: list[float] = []
    unrecovered: list[str] = []
    orphans: set[str] = set()
    for kill in kills:
        kill["recovery_s"] = []
        for token in kill["orphans"]:
            orphans.add(token)
            later = [r.received_at - kill["t"] for r in requests.get(token, [])
                     if r.received_at > kill["t"]]
            if not later and finished.get(token, 0.0) > kill["wall"]:
                later = [finished[token] - kill["wall"]]
            if later:
                recovery.append(min(later))
                kill["recovery_s"].append(round(min(later), 1))
            else:
                unrecovered.append(token)
    return recovery, unrecovered, orphans


def run_scenario(rig: Rig, listener: Any) -> Outcome:
    figures = record("worker_death")
    threads_a = rig.llm_worker("threads-a", concurrency=16)
    threads_b = rig.llm_worker("threads-b", concurrency=16)
    prefork = rig.llm_worker("prefork", pool="prefork", concurrency=2)
    notify = rig.notify_worker()
    bridge = rig.bridge()
    start_all(bridge, notify, threads_a, threads_b, prefork)
    room = listener(rig)

    jobs = [rig.chat() if i % 5 == 4 else rig.inspiration() for i in range(JOBS)]
    producer = rig.produce(jobs, rate=RATE, timeout_s=240)
    t0 = time.monotonic()
    killer = Killer(rig, t0)
    # The notify worker goes first: it runs beat, hence the reaper, and orphans wait for it.
    killer.run([
        (2, "notify worker (beat, reaper)", notify, "idle"),
        (5, "prefork child", prefork, "child"),
        (7, "whole threads worker a", threads_a, "whole"),
        (11, "prefork child", prefork, "child"),
        (15, "whole threads worker b", threads_b, "whole"),
        (19, "prefork child", prefork, "child"),
        (23, "whole prefork worker", prefork, "whole"),
        (26, "prefork child", prefork, "child"),
        (29, "whole threads worker a", threads_a, "whole"),
    ])
    kills = killer.kills

    outcomes = producer.result()
    counts = rig.wait_jobs_end(JOBS, timeout=SETTLE_S)
    wait_until(lambda: rig.query("SELECT count(*) FROM notification_outbox "
                                 "WHERE delivered_at IS NULL")[0][0] == 0, 30)
    time.sleep(2)  # the last Socket.IO and webhook deliveries in flight
    elapsed = time.monotonic() - t0

    requests = rig.llm_requests_by_token()
    per_job = {token: len(reqs) for token, reqs in requests.items()}
    twice = sorted(t for t, n in per_job.items() if n > 1)
    rows = rig.jobs()
    finished = {rig.job_token(r) or "": r.finished_at.timestamp() for r in rows
                if r.finished_at is not None}
    recovery, unrecovered, orphan_tokens = recovery_times(kills, requests, finished)
    stuck = [(str(r.id), r.status, r.attempts) for r in rows if r.status != "succeeded"]
    stuck_owners = rig.query("SELECT DISTINCT lease_owner FROM ai_jobs WHERE status = 'running'")
    stuck_by_cause = rig.stuck()
    chat_rows = rig.query("SELECT count(*) FROM chat_messages WHERE role = 'assistant'")[0][0]
    outbox_rows = rig.query("SELECT count(*) FROM notification_outbox")[0][0]
    delivered = rig.query("SELECT count(*) FROM notification_outbox "
                          "WHERE delivered_at IS NOT NULL")[0][0]
    socket = socket_counts(room.events, ("inspiration-ready", "chat-reply-ready"))
    logs = "".join(p.log_text() for p in (threads_a, threads_b, prefork))
    figures.update({
        "jobs": JOBS, "chat_jobs": CHATS, "rate_per_s": RATE, "seconds": round(elapsed, 1),
        **bullmq_counts(outcomes),
        "rows": len(rows), **{f"status_{k}": v for k, v in sorted(counts.items())},
        "lost": JOBS - counts["succeeded"],
        "kills": [(k["at"], k["what"], len(k["orphans"]), k["recovery_s"]) for k in kills],
        "orphaned_jobs": len(orphan_tokens),
        "orphans_run_again": len(recovery),
        "orphans_never_run_again": len(unrecovered),
        "recovery_s_max": round(max(recovery), 2) if recovery else None,
        "recovery_s_median": round(statistics.median(recovery), 2) if recovery else None,
        "recovery_s_within_15": sum(1 for r in recovery if r <= RECOVERY_WINDOW_S),
        "llm_requests": sum(per_job.values()),
        "jobs_executed_twice": len(twice),
        "jobs_executed_twice_pct": round(100 * len(twice) / JOBS, 2),
        "jobs_executed_twice_not_orphaned": len([t for t in twice if t not in orphan_tokens]),
        "max_llm_requests_per_job": max(per_job.values()),
        "jobs_with_attempts_gt_1": sum(1 for r in rows if r.attempts > 1),
        "duplicates": rig.duplicates(),
        "assistant_messages": chat_rows,
        "outbox_rows": outbox_rows, "outbox_delivered": delivered,
        **socket, **rig.webhook_counts(),
        "lease_refusals_in_logs": logs.count("this delivery ends here"),
        "reaper_resend_lines": notify.log_text().count("reaper re-sent"),
        "stuck_running_lease_owners": [r[0] for r in stuck_owners],
        "stuck": stuck_by_cause,
    })
    alive = all(p.alive for p in (bridge, notify, threads_a, threads_b, prefork))
    return Outcome(figures, counts, recovery, unrecovered, stuck, twice, socket, alive)


def test_every_job_is_accepted_once_and_nothing_is_duplicated(outcome: Outcome):
    f = outcome.figures
    assert f.get("bullmq_completed") == JOBS
    assert f["rows"] == JOBS
    assert all(v == 0 for v in f["duplicates"].values()), f["duplicates"]
    succeeded = outcome.counts["succeeded"]
    # One outbox row, one reply and one distinct notification per job that ended.
    assert f["outbox_rows"] == succeeded
    assert outcome.socket["socketio_distinct"] == succeeded
    assert f["webhook_distinct_ids"] == succeeded
    assert outcome.alive


def test_at_most_5_percent_of_jobs_are_executed_twice(outcome: Outcome):
    assert len(outcome.twice) <= MAX_TWICE * JOBS, outcome.twice


def test_the_kills_hit_running_jobs(outcome: Outcome):
    """The fault is real: the killed processes had jobs in hand."""
    assert outcome.figures["orphaned_jobs"] >= 6, outcome.figures["kills"]


def test_no_job_is_lost_and_orphans_run_again_within_15_s(outcome: Outcome):
    """The recovery window: the lease (VAMU_JOB_LEASE_S 10 s) runs out, the reaper (every
    VAMU_REAPER_INTERVAL_S 2 s) sends the job again, a worker takes it: at most 15 s."""
    assert outcome.counts["succeeded"] == JOBS, (outcome.counts, outcome.stuck)
    assert not outcome.unrecovered, outcome.unrecovered
    assert max(outcome.recovery) <= RECOVERY_WINDOW_S, sorted(outcome.recovery)
