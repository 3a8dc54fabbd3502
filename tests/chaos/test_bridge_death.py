"""2. Bridge death: SIGKILL of the bridge in the middle of a batch loses and doubles nothing.

The Node producer adds 300 jobs at 60 a second. Once about a third of them have rows, the
bridge is SIGKILLed and a new one started at once. The jobs the dead bridge held stay active in
BullMQ with locks nobody renews; after `VAMU_BRIDGE_LOCK_DURATION_MS` (2 s here) and a stalled
check (every 1 s) the new bridge takes them again and finds their rows by `source_ref`.
"""

from __future__ import annotations

import time

import pytest
import redis

from tests.chaos.conftest import bullmq_counts, socket_counts, start_all, wait_until

pytestmark = pytest.mark.timeout(300)

JOBS = 300
RATE = 60.0


def test_sigkill_of_the_bridge_mid_batch_loses_and_doubles_nothing(make_rig, listener, figures):
    rig = make_rig()
    bridge = rig.bridge()
    start_all(bridge, rig.notify_worker(), rig.llm_worker("threads", concurrency=16))
    room = listener(rig)
    queue_keys = redis.Redis.from_url(rig.env["VAMU_REDIS_URL"])

    producer = rig.produce([rig.inspiration() for _ in range(JOBS)], rate=RATE, timeout_s=120)
    assert wait_until(lambda: rig.query("SELECT count(*) FROM ai_jobs")[0][0] >= JOBS // 3, 30)
    in_hand = queue_keys.llen(f"bull:{rig.env['VAMU_BULLMQ_QUEUE']}:active")
    rows_at_kill = rig.query("SELECT count(*) FROM ai_jobs")[0][0]
    added_at_kill = producer.added_count
    killed_at = time.monotonic()
    bridge.kill()
    bridge.start()
    restarted_after = time.monotonic() - killed_at
    queue_keys.close()

    outcomes = producer.result()
    counts = rig.wait_jobs_end(JOBS, timeout=90)
    wait_until(lambda: rig.query("SELECT count(*) FROM notification_outbox "
                                 "WHERE delivered_at IS NULL")[0][0] == 0, 30)
    time.sleep(1.5)

    per_job = {t: len(r) for t, r in rig.llm_requests_by_token().items()}
    log = bridge.log_text()
    restarted_log = log[log.rfind("=== start 1"):]
    figures.update({
        "jobs": JOBS, "added_when_killed": added_at_kill, "rows_when_killed": rows_at_kill,
        "active_in_bullmq_when_killed": in_hand,
        "bridge_restart_s": round(restarted_after, 1),
        **bullmq_counts(outcomes),
        "rows": sum(counts.values()),
        **{f"status_{k}": v for k, v in sorted(counts.items())},
        "lost": JOBS - counts["succeeded"],
        "duplicates": rig.duplicates(),
        "jobs_executed_twice": sum(1 for n in per_job.values() if n > 1),
        "matched_after_restart": restarted_log.count(" matched as job "),
        "bullmq_attempts_max": max((o.get("attemptsMade") or 0) for o in outcomes),
        **socket_counts(room.events, ("inspiration-ready",)),
        **rig.webhook_counts(),
    })

    assert in_hand > 0 or added_at_kill < JOBS, "the kill did not land mid-batch"
    assert figures.get("bullmq_completed") == JOBS, [o for o in outcomes
                                                     if o["state"] != "completed"][:5]
    assert counts["succeeded"] == JOBS, counts
    assert all(v == 0 for v in figures["duplicates"].values()), figures["duplicates"]
    assert figures["socketio_distinct"] == JOBS
    assert figures["webhook_distinct_ids"] == JOBS
