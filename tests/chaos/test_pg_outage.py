"""4. PostgreSQL outage of 30 s mid-run: jobs retry with backoff and complete after it returns.

The machine's PostgreSQL is not stopped: the bridge, the notify worker and the LLM worker reach
it through a TCP proxy (`tests/chaos/proxy.py`). 5 s into the run the proxy resets every open
connection and refuses new ones for 30 s, then listens again. The test counts through its own,
direct connection.

Retry settings: `VAMU_JOB_MAX_RETRIES` 8, `VAMU_RETRY_BACKOFF_BASE_S` 1, `VAMU_RETRY_BACKOFF_MAX_S`
16, so a job whose attempt fails inside the use case because of the database (a transient error
that counts against the budget) still has retries after 30 s: the shortest possible sum of 8
waits is 0.5 + 1 + 2 + 4 + 8 + 8 + 8 + 8 = 39.5 s. A database error at the start or the commit
of an attempt is retried without limit. The Node producer adds its jobs with `attempts: 40,
backoff: fixed 2 s`, so a job the bridge cannot accept during the outage is offered again.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.chaos.conftest import bullmq_counts, socket_counts, start_all, wait_until
from tests.chaos.proxy import TcpProxy

pytestmark = pytest.mark.timeout(360)

JOBS = 180
CHATS = 30
RATE = 10.0
CUT_AT_S = 5.0
OUTAGE_S = 30.0
RETRY_ENV = {
    "VAMU_JOB_MAX_RETRIES": "8",
    "VAMU_RETRY_BACKOFF_BASE_S": "1",
    "VAMU_RETRY_BACKOFF_MAX_S": "16",
}
BULLMQ_OPTS = {"attempts": 40, "backoff": {"type": "fixed", "delay": 2000}}


def through(proxy: TcpProxy):
    def rewrite(url: str) -> str:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{proxy.port}"
        return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2
                                         else host))
    return rewrite


def test_a_30_s_postgresql_outage_mid_run_fails_no_job(make_rig, listener, figures):
    with TcpProxy("127.0.0.1", 5432) as proxy:
        rig = make_rig(worker_db_url=through(proxy), **RETRY_ENV)
        bridge, notify = rig.bridge(), rig.notify_worker()
        worker = rig.llm_worker("threads", concurrency=16)
        start_all(bridge, notify, worker)
        room = listener(rig)

        jobs = [rig.chat(opts=BULLMQ_OPTS) if i % 6 == 5 else rig.inspiration(opts=BULLMQ_OPTS)
                for i in range(JOBS)]
        producer = rig.produce(jobs, rate=RATE, timeout_s=200)
        t0 = time.monotonic()
        time.sleep(CUT_AT_S)
        counts_at_cut = rig.status_counts()
        proxy.cut()
        cut_at = time.monotonic()
        time.sleep(OUTAGE_S)
        counts_at_restore = rig.status_counts()
        proxy.restore()
        restored_at = time.monotonic()

        outcomes = producer.result()
        counts = rig.wait_jobs_end(JOBS, timeout=150, idle_s=45)
        all_ended_s = time.monotonic() - restored_at
        wait_until(lambda: rig.query("SELECT count(*) FROM notification_outbox "
                                     "WHERE delivered_at IS NULL")[0][0] == 0, 60)
        time.sleep(1.5)

        rows = rig.jobs()
        per_job = {t: len(r) for t, r in rig.llm_requests_by_token().items()}
        failed = [(r.error_kind, (r.error_message or "")[:120]) for r in rows
                  if r.status == "failed"]
        finished_after = sorted(
            r.finished_at.timestamp() for r in rows if r.finished_at is not None)
        wall_restore = time.time() - (time.monotonic() - restored_at)
        figures.update({
            "jobs": JOBS, "chat_jobs": CHATS, "outage_s": OUTAGE_S,
            "status_at_cut": dict(counts_at_cut), "status_at_restore": dict(counts_at_restore),
            "proxy_connections_reset": proxy.connections_reset,
            **bullmq_counts(outcomes),
            "bullmq_jobs_retried_by_node": sum(1 for o in outcomes
                                               if (o.get("attemptsMade") or 0) > 1),
            "bullmq_attempts_max": max((o.get("attemptsMade") or 0) for o in outcomes),
            "rows": len(rows), **{f"status_{k}": v for k, v in sorted(counts.items())},
            "lost": JOBS - counts["succeeded"] - counts["failed"],
            "failed": failed,
            "jobs_with_attempts_gt_1": sum(1 for r in rows if r.attempts > 1),
            "attempts_max": max(r.attempts for r in rows),
            "jobs_executed_twice": sum(1 for n in per_job.values() if n > 1),
            "max_llm_requests_per_job": max(per_job.values()),
            "jobs_finished_after_restore": sum(1 for t in finished_after if t > wall_restore),
            "seconds_from_restore_to_all_ended": round(all_ended_s, 1),
            "duplicates": rig.duplicates(),
            **socket_counts(room.events, ("inspiration-ready", "chat-reply-ready")),
            **rig.webhook_counts(),
            "processes_alive": all(p.alive for p in (bridge, notify, worker)),
        })
        del cut_at, t0
        rig.stop_all()  # while the proxy still runs

    assert figures["processes_alive"]
    assert figures.get("bullmq_completed") == JOBS, [o for o in outcomes
                                                     if o["state"] != "completed"][:5]
    assert counts["succeeded"] == JOBS, (counts, failed)
    assert not failed
    assert figures["jobs_finished_after_restore"] > 0
    assert all(v == 0 for v in figures["duplicates"].values()), figures["duplicates"]
    assert figures["socketio_distinct"] == JOBS
    assert figures["webhook_distinct_ids"] == JOBS
