"""3. Redis restart (with AOF) mid-run: workers and bridge reconnect by themselves, 0 lost.

The test runs its own redis-server (`--appendonly yes --appendfsync always`, in a temporary
directory) for everything: the Celery broker (DB 11), BullMQ, the Socket.IO adapter and the chat
streams (DB 12). The Node producer adds 200 jobs at 20 a second; 3 s in, the Redis server is
SIGKILLed, and 3 s later started again on the same port from its AOF file. Nobody restarts the
bridge, the workers, the producer or the Socket.IO server.
"""

from __future__ import annotations

import time

import pytest
import redis

from tests.chaos.conftest import bullmq_counts, socket_counts, start_all, wait_until

pytestmark = pytest.mark.timeout(300)

JOBS = 200
RATE = 20.0
DOWN_S = 3.0

LOST_MESSAGE_BUG = (
    "BUG (narrowed): the Redis transport pops a message (BRPOP) before it records it as "
    "unacknowledged (a separate MULTI/HSET), so a Redis crash between the two drops it. The "
    "reaper now re-sends a job queued without starting for VAMU_STALE_QUEUED_S (120 s), which "
    "is longer than this test waits.")


def test_a_redis_restart_mid_run_is_survived_without_restarting_anything(
    own_redis, make_rig, listener, figures
):
    rig = make_rig(redis_base=own_redis.url)
    bridge, notify = rig.bridge(), rig.notify_worker()
    worker = rig.llm_worker("threads", concurrency=16)
    start_all(bridge, notify, worker)
    room = listener(rig)

    producer = rig.produce([rig.inspiration() for _ in range(JOBS)], rate=RATE, timeout_s=150)
    t0 = time.monotonic()
    time.sleep(3.0)
    rows_before = rig.query("SELECT count(*) FROM ai_jobs")[0][0]
    own_redis.kill()
    time.sleep(DOWN_S)
    own_redis.start()
    restarted_at = time.monotonic()
    rows_at_restart = rig.query("SELECT count(*) FROM ai_jobs")[0][0]
    # A row created after the restart shows the bridge consumes again.
    assert wait_until(
        lambda: rig.query("SELECT count(*) FROM ai_jobs")[0][0] > rows_at_restart, 60)
    bridge_back_s = time.monotonic() - restarted_at
    assert wait_until(lambda: "Task vamu.inspiration.generate" in
                      worker.log_text()[worker.log_text().rfind("Connection to broker lost"):], 60)
    worker_back_s = time.monotonic() - restarted_at

    outcomes = producer.result()
    counts = rig.wait_jobs_end(JOBS, timeout=120, idle_s=30)
    wait_until(lambda: rig.query("SELECT count(*) FROM notification_outbox "
                                 "WHERE delivered_at IS NULL")[0][0] == 0, 60)
    time.sleep(1.5)

    per_job = {t: len(r) for t, r in rig.llm_requests_by_token().items()}
    stuck = rig.stuck()
    broker = redis.Redis.from_url(rig.env["VAMU_REDIS_URL"])
    created = int(broker.get(f"bull:{rig.env['VAMU_BULLMQ_QUEUE']}:id") or 0)
    broker.close()
    log = bridge.log_text()
    figures.update({
        "jobs": JOBS, "rows_when_killed": rows_before, "redis_down_s": DOWN_S,
        "bridge_consuming_again_s_after_restart": round(bridge_back_s, 1),
        "llm_worker_consuming_again_s_after_restart": round(worker_back_s, 1),
        "seconds": round(time.monotonic() - t0, 1),
        **bullmq_counts(outcomes),
        "rows": sum(counts.values()),
        **{f"status_{k}": v for k, v in sorted(counts.items())},
        "lost": JOBS - counts["succeeded"],
        "stuck": stuck,
        "bullmq_jobs_created_for_200_adds": created,
        "bullmq_jobs_matched_by_request_id": log.count(" matched as job "),
        "duplicates": rig.duplicates(),
        "jobs_executed_twice": sum(1 for n in per_job.values() if n > 1),
        "jobs_with_attempts_gt_1": sum(1 for r in rig.jobs() if r.attempts > 1),
        **socket_counts(room.events, ("inspiration-ready",)),
        **rig.webhook_counts(),
        "processes_alive": all(p.alive for p in (bridge, notify, worker)),
    })

    assert figures["processes_alive"]
    assert figures.get("bullmq_completed") == JOBS, [o for o in outcomes
                                                     if o["state"] != "completed"][:5]
    assert figures["rows"] == JOBS
    assert all(v == 0 for v in figures["duplicates"].values()), figures["duplicates"]
    assert figures["socketio_distinct"] == counts["succeeded"]
    assert figures["webhook_distinct_ids"] == counts["succeeded"]
    assert counts["failed"] == 0
    # 0 lost, except jobs whose Celery message Redis dropped in the crash: that is the bug that
    # test_a_job_whose_broker_message_was_lost_still_runs shows deterministically.
    assert not stuck["running"] and not stuck["other"], stuck


@pytest.mark.xfail(strict=True, reason=LOST_MESSAGE_BUG)
def test_a_job_whose_broker_message_was_lost_still_runs(own_redis, make_rig, figures):
    """What a Redis crash between BRPOP and the unacked bookkeeping leaves behind, made on
    purpose: the bridge accepts three jobs while no LLM worker runs, their Celery messages are
    removed from the queue, then a worker starts. The reaper should hand them out again."""
    rig = make_rig(redis_base=own_redis.url)
    start_all(rig.bridge(), rig.notify_worker())
    outcomes = rig.produce([rig.inspiration() for _ in range(3)], timeout_s=30).result()
    assert [o["state"] for o in outcomes] == ["completed"] * 3
    client = redis.Redis.from_url(rig.env["VAMU_BROKER_URL"])
    queue = f"{rig.env['VAMU_BROKER_KEY_PREFIX']}inspiration"
    assert wait_until(lambda: client.llen(queue) == 3, 10)
    client.delete(queue)  # the messages are gone, as after the crash
    client.close()
    worker = rig.llm_worker("threads", concurrency=4).start()
    counts = rig.wait_jobs_end(3, timeout=40, idle_s=40)
    figures.update({**{f"status_{k}": v for k, v in sorted(counts.items())},
                    "reaper_resend_lines": rig.procs[1].log_text().count("reaper re-sent"),
                    "worker_tasks_received": worker.log_text().count("] received")})
    assert counts["succeeded"] == 3, counts
