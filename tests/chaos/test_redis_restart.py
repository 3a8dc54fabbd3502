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

from tests.chaos.conftest import answer, bullmq_counts, socket_counts, start_all, wait_until
from vamu_tasks.testing.fake_llm import Behaviour, Error, RecordedRequest

pytestmark = pytest.mark.timeout(300)

JOBS = 200
RATE = 20.0
DOWN_S = 3.0

# Before vamu_tasks/redis_transport.py, a worker holding unacknowledged messages died of this
# when the broker went away (docs/reliability.md, bug E).
KOMBU_CRASH = "'NoneType' object has no attribute 'hostname'"
# A message a worker had popped (BRPOP) but not yet recorded as unacknowledged (a separate
# MULTI/HSET) is dropped by the crash: the reaper finds its job by asking the broker and sends
# it again (VAMU_LOST_MESSAGE_AFTER_S).


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
    exited = [proc.name for proc in (bridge, notify, worker) if not proc.alive]
    assert wait_until(lambda: "Task vamu.inspiration.generate" in worker.log_text()[
        max(worker.log_text().rfind("Connection to broker lost"),
            worker.log_text().rfind("=== start")):], 60)
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
        "exited_instead_of_reconnecting": exited,
        "processes_alive_at_end": all(p.alive for p in (bridge, notify, worker)),
    })

    assert not exited, [(name, KOMBU_CRASH in p.log_text()) for p in rig.procs
                        for name in exited if p.name == name]
    assert figures["processes_alive_at_end"]
    assert figures.get("bullmq_completed") == JOBS, [o for o in outcomes
                                                     if o["state"] != "completed"][:5]
    assert figures["rows"] == JOBS
    assert all(v == 0 for v in figures["duplicates"].values()), figures["duplicates"]
    assert figures["socketio_distinct"] == counts["succeeded"]
    assert figures["webhook_distinct_ids"] == counts["succeeded"]
    assert counts["failed"] == 0
    assert counts["succeeded"] == JOBS, stuck


def test_a_job_whose_broker_message_was_lost_runs_again_within_seconds(
    own_redis, make_rig, figures
):
    """What a crash between BRPOP and the unacked bookkeeping leaves behind, made on purpose:
    the bridge accepts three jobs while no LLM worker runs, their Celery messages are removed
    from the queue, then a worker starts. The reaper asks the broker, finds no message for
    them and sends them again after VAMU_LOST_MESSAGE_AFTER_S (5 s); the slow stale-queued
    check is set out of reach (600 s) so only that can run them."""
    rig = make_rig(redis_base=own_redis.url, VAMU_STALE_QUEUED_S="600")
    notify = rig.notify_worker()
    start_all(rig.bridge(), notify)
    outcomes = rig.produce([rig.inspiration() for _ in range(3)], timeout_s=30).result()
    assert [o["state"] for o in outcomes] == ["completed"] * 3
    client = redis.Redis.from_url(rig.env["VAMU_BROKER_URL"])
    queue = f"{rig.env['VAMU_BROKER_KEY_PREFIX']}inspiration"
    assert wait_until(lambda: client.llen(queue) == 3, 10)
    client.delete(queue)  # the messages are gone, as after the crash
    lost_at = time.monotonic()
    client.close()
    rig.llm_worker("threads", concurrency=4).start()
    counts = rig.wait_jobs_end(3, timeout=60, idle_s=60)
    figures.update({**{f"status_{k}": v for k, v in sorted(counts.items())},
                    "seconds_from_loss_to_all_ended": round(time.monotonic() - lost_at, 1),
                    "reaper_resend_lines": notify.log_text().count("reaper re-sent")})
    assert counts["succeeded"] == 3, counts
    assert figures["seconds_from_loss_to_all_ended"] < 20


def test_a_worker_holding_a_retry_reconnects_after_a_redis_restart(own_redis, make_rig, figures):
    """Five jobs get a 429 with Retry-After 8 s, so the LLM worker holds their retries
    (unacknowledged, waiting for the countdown) when Redis is SIGKILLed; Redis is back 3 s
    later. The worker should reconnect, and the jobs end once the provider answers."""
    rig = make_rig(redis_base=own_redis.url, VAMU_RETRY_BACKOFF_MAX_S="30", VAMU_NOTIFY="log")
    worker = rig.llm_worker("threads", concurrency=4)
    start_all(rig.bridge(), rig.notify_worker(), worker)
    limited: set[str] = set()

    def once_429(request: RecordedRequest) -> Behaviour:
        token = rig.token_of(str(request.body)) or ""
        if token not in limited:
            limited.add(token)
            return Error(429, "slow down", retry_after=8)
        return answer(request)

    rig.llm.set_responder(once_429)
    rig.produce([rig.inspiration() for _ in range(5)], timeout_s=30).result()
    assert wait_until(lambda: len(limited) == 5, 20)
    time.sleep(1.0)
    own_redis.kill()
    time.sleep(DOWN_S)
    own_redis.start()
    counts = rig.wait_jobs_end(5, timeout=40, idle_s=40)
    figures.update({"worker_alive": worker.alive,
                    "restore_skipped_lines": worker.log_text().count("could be put back"),
                    "worker_died_of_known_crash": KOMBU_CRASH in worker.log_text(),
                    **{f"status_{k}": v for k, v in sorted(counts.items())}})
    assert worker.alive, worker.log_text()[-1500:]
    assert counts["succeeded"] == 5
