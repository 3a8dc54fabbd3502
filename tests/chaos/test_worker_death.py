"""1. Worker death: SIGKILL of pool children and of whole worker processes during 500 jobs.

Topology: the bridge, the notify worker (with beat: the reaper every 2 s, the outbox sweep), two
threads-pool LLM workers (concurrency 16 each, as `workers.llm` runs) and one prefork LLM worker
with two children. The Node producer adds 500 jobs (400 inspiration, 100 chat messages, each its
own conversation) at 20 a second; the fake LLM answers in 0.2 s. While they run, a fixed schedule
SIGKILLs prefork children (the master forks new ones), whole LLM workers (restarted at once, as a
supervisor would), the whole prefork worker and the notify worker.

Counted: rows and statuses in PostgreSQL, BullMQ outcomes, LLM requests per job at the fake LLM
(each request carries its job's token), outbox rows, chat messages, Socket.IO and webhook
deliveries (total and distinct ids), and for each job a killed process was running (its lease
owner at the moment of the kill), the time from the kill to its next LLM request.

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
RATE = 20.0
RECOVERY_WINDOW_S = 15.0
MAX_TWICE = 0.05
SETTLE_S = 90.0  # after the last job was added, how long the jobs get to end


def running_on(rig: Rig, pids: list[int]) -> list[str]:
    """Tokens of the jobs whose lease names one of these processes."""
    owners = [f"{HOST}:{pid}" for pid in pids]
    rows = rig.query("SELECT request FROM ai_jobs WHERE status = 'running' "
                     "AND lease_owner = ANY(:owners)", owners=owners)
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
    rng = random.Random(7)

    def child(proc: Proc) -> tuple[list[int], bool]:
        kids = proc.children()
        return ([rng.choice(kids)] if kids else []), False

    def whole(proc: Proc) -> tuple[list[int], bool]:
        return ([proc.pid, *proc.children()] if proc.alive else []), True

    schedule: list[tuple[float, str, Proc, Any]] = [
        (4, "prefork child", prefork, child),
        (6, "whole threads worker a", threads_a, whole),
        (8, "prefork child", prefork, child),
        (10, "notify worker (beat)", notify, whole),
        (12, "prefork child", prefork, child),
        (14, "whole threads worker b", threads_b, whole),
        (16, "prefork child", prefork, child),
        (18, "whole prefork worker", prefork, whole),
        (22, "prefork child", prefork, child),
        (24, "whole threads worker a", threads_a, whole),
    ]
    kills: list[dict[str, Any]] = []
    restarting: list[tuple[Proc, int]] = []
    for at, what, proc, pick in schedule:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        # A restarted worker must be up before it is killed again.
        for pending in [r for r in restarting if r[0] is proc]:
            pending[0].wait_ready(pending[1], 90)
            restarting.remove(pending)
        pids, is_whole = pick(proc)
        if not pids:
            continue
        orphans = running_on(rig, pids)
        killed_at = time.monotonic()
        if is_whole:
            proc.kill()
            restarting.append((proc, proc.launch()))  # restarted at once, without waiting
        else:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        kills.append({"at": round(killed_at - t0, 1), "what": what, "orphans": orphans,
                      "t": killed_at})
    for proc, offset in restarting:
        proc.wait_ready(offset, 90)

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
    recovery: list[float] = []
    orphan_tokens: set[str] = set()
    unrecovered: list[str] = []
    for kill in kills:
        for token in kill["orphans"]:
            orphan_tokens.add(token)
            later = [r.received_at for r in requests.get(token, []) if r.received_at > kill["t"]]
            if later:
                recovery.append(min(later) - kill["t"])
            else:
                unrecovered.append(token)
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
        "kills": [(k["at"], k["what"], len(k["orphans"])) for k in kills],
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
    assert outcome.figures["jobs_executed_twice_not_orphaned"] == 0


# The reaper bug this test found (a dead owner's lease kept on the claim) is fixed; the one
# that remains can still lose a message, so a failure here is expected now and then.
@pytest.mark.xfail(strict=False, reason=(
    "BUG (remaining): a worker SIGKILLed between Redis's BRPOP and kombu's unacked bookkeeping "
    "loses that message, and the reaper never re-sends a queued job that has no retry_at "
    "(see test_redis_restart)."))
def test_no_job_is_lost_and_orphans_run_again_within_15_s(outcome: Outcome):
    assert outcome.counts["succeeded"] == JOBS, (outcome.counts, outcome.stuck)
    assert not outcome.unrecovered, outcome.unrecovered
    assert max(outcome.recovery) <= RECOVERY_WINDOW_S, sorted(outcome.recovery)
