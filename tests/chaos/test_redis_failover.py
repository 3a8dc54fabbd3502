"""9. Redis failover through Sentinel: the primary SIGKILLed mid-run, a replica promoted, 0 lost.

The test runs a Redis primary and one replica (`--replicaof`, both with a password, AOF with
`appendfsync always`) and three Sentinels (`redis-server <conf> --sentinel`, quorum 2,
`down-after-milliseconds` 1000), all on free local ports. Every process gets
`VAMU_REDIS_SENTINELS`; `VAMU_BROKER_URL` and `VAMU_REDIS_URL` still name the first primary, whose
address stops mattering: only their database numbers and password are used. The Node producer
and the Socket.IO server use ioredis with the same Sentinels, as NestJS would.

The producer adds 300 jobs (one in six a chat message) at 25 a second; 4 s in, the primary is
SIGKILLed and never comes back. The Sentinels promote the replica; nobody restarts the bridge,
the workers, the producer or the Socket.IO server. The first five jobs get a 429 with
`Retry-After: 8` from the fake LLM, so the LLM worker holds their retries unacknowledged when
the primary dies: the path that killed workers on a Redis restart before
`vamu_tasks/redis_transport.py` (docs/reliability.md, bug E), here on kombu's Sentinel transport.

Socket.IO events go through Redis pub/sub, which keeps nothing: an event published to the new
primary before the Socket.IO server has subscribed there again reaches no one. The test measures
when it subscribes again and checks that every event it missed belongs to a job that finished
before then (docs/reliability.md, section 9).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.chaos.conftest import (
    USERS,
    Producer,
    answer,
    bullmq_counts,
    socket_counts,
    start_all,
    wait_until,
)
from tests.support.redis_sentinel import MASTER, PASSWORD, SentinelCluster
from tests.support.socketio import SocketIOListener
from vamu_tasks.testing.fake_llm import Behaviour, Error, RecordedRequest

pytestmark = pytest.mark.timeout(240)

JOBS = 300
RATE = 25.0
KILL_AFTER_S = 4.0
HELD_RETRIES = 5
# What killed a worker holding unacknowledged messages when its broker went away, before the
# patched transport (docs/reliability.md, bug E).
KOMBU_CRASH = "'NoneType' object has no attribute 'hostname'"


def _patterns(client: redis.Redis) -> int:
    try:
        return int(client.execute_command("PUBSUB", "NUMPAT"))
    except redis.RedisError:
        return 0


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    cluster = SentinelCluster(tmp_path / "sentinel-cluster")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def test_a_redis_failover_mid_run_is_followed_by_every_process_without_a_restart(
    sentinel_cluster, make_rig, figures
):
    cluster = sentinel_cluster
    rig = make_rig(
        # The test's own clean-up and counts read the node that survives.
        redis_base=f"redis://:{PASSWORD}@127.0.0.1:{cluster.replica_port}",
        VAMU_BROKER_URL=cluster.url(cluster.primary_port, 11),
        VAMU_REDIS_URL=cluster.url(cluster.primary_port, 12),
        VAMU_REDIS_SENTINELS=cluster.env_value,
        VAMU_REDIS_SENTINEL_MASTER=MASTER,
        # Lets a Retry-After of 8 s through, so the held retries outlast the failover.
        VAMU_RETRY_BACKOFF_MAX_S="30",
    )
    limited: set[str] = set()
    held = {f"{rig.tag}-{n:04d}" for n in range(1, HELD_RETRIES + 1)}

    def first_jobs_once_429(request: RecordedRequest) -> Behaviour:
        token = rig.token_of(str(request.body)) or ""
        if token in held and token not in limited:
            limited.add(token)
            return Error(429, "slow down", retry_after=8)
        return answer(request)

    rig.llm.set_responder(first_jobs_once_429)
    bridge, notify = rig.bridge(), rig.notify_worker()
    worker = rig.llm_worker("threads", concurrency=16)
    start_all(bridge, notify, worker)
    room = SocketIOListener(rig.env["VAMU_REDIS_URL"], USERS, key=rig.env["VAMU_SOCKETIO_KEY"],
                            sentinels=cluster.addresses, sentinel_master=MASTER)
    room.__enter__()
    try:
        # attempts: what a NestJS producer on a Redis that can fail over sets; a job whose
        # hand-over to Celery met the failover is offered again instead of failing.
        opts = {"attempts": 5, "backoff": {"type": "fixed", "delay": 1000}}
        jobs = [rig.chat(opts=opts) if i % 6 == 5 else rig.inspiration(opts=opts)
                for i in range(JOBS)]
        producer = Producer({
            "redis": rig.env["VAMU_REDIS_URL"], "prefix": "bull",
            "queue": rig.env["VAMU_BULLMQ_QUEUE"], "jobs": jobs, "ratePerSec": RATE,
            "wait": True, "timeoutMs": 150_000,
            "sentinels": [list(a) for a in cluster.addresses], "sentinelMaster": MASTER,
        }, 210)
        t0 = time.monotonic()
        time.sleep(KILL_AFTER_S)
        retries_held_at_kill = len(limited)
        rows_at_kill = rig.query("SELECT count(*) FROM ai_jobs")[0][0]
        added_at_kill = producer.added_count
        cluster.primary.kill()
        killed_at, killed_wall = time.monotonic(), time.time()
        resubscribed: dict[str, float] = {}

        def watch_the_socketio_server_subscribe_again() -> None:
            # @socket.io/redis-adapter listens with PSUBSCRIBE; only the test's server does here.
            new_primary = redis.Redis(port=cluster.replica_port, password=PASSWORD)
            try:
                if wait_until(lambda: _patterns(new_primary) > 0, 60, interval=0.02):
                    resubscribed["wall"] = time.time()
            finally:
                new_primary.close()

        watcher = threading.Thread(target=watch_the_socketio_server_subscribe_again, daemon=True)
        watcher.start()
        assert wait_until(lambda: cluster.primary_port_now() == cluster.replica_port, 60,
                          interval=0.05), "the Sentinels did not promote the replica"
        promoted_s = time.monotonic() - killed_at
        # The rig's own look into the broker (rig.stuck) reads the new primary; the processes
        # were started with the old URL and keep it.
        rig.env["VAMU_BROKER_URL"] = cluster.url(cluster.replica_port, 11)
        rows_at_promotion = rig.query("SELECT count(*) FROM ai_jobs")[0][0]
        # A row created after the promotion: the bridge takes jobs from the new primary.
        assert wait_until(lambda: rig.query("SELECT count(*) FROM ai_jobs")[0][0]
                          > rows_at_promotion, 60, interval=0.05)
        bridge_back_s = time.monotonic() - killed_at

        def worker_took_a_task_after_losing_the_broker() -> bool:
            log = worker.log_text()
            lost = log.rfind("Connection to broker lost")
            return lost >= 0 and "Task vamu." in log[lost:]

        assert wait_until(worker_took_a_task_after_losing_the_broker, 60, interval=0.05)
        worker_back_s = time.monotonic() - killed_at

        outcomes = producer.result()
        mixed = {"inspiration": JOBS - JOBS // 6, "chatbot": JOBS // 6}
        counts = rig.wait_jobs_end(JOBS, timeout=120, idle_s=30)
        wait_until(lambda: rig.query("SELECT count(*) FROM notification_outbox "
                                     "WHERE delivered_at IS NULL")[0][0] == 0, 60)
        time.sleep(1.5)
        events = room.events
        watcher.join(5)
    finally:
        room.__exit__(None, None, None)

    heard = {e["data"]["jobId"] for e in events
             if e["event"] in ("inspiration-ready", "chat-reply-ready")}
    back_wall = resubscribed.get("wall", float("inf"))
    unheard = [(str(r.id), r.finished_at.timestamp()) for r in rig.jobs()
               if str(r.id) not in heard and r.status == "succeeded"]

    per_job = {t: len(r) for t, r in rig.llm_requests_by_token().items()}
    features = dict(rig.query("SELECT feature, count(*) FROM ai_jobs GROUP BY feature"))
    new_primary = redis.Redis.from_url(cluster.url(cluster.replica_port, 12))
    created = int(new_primary.get(f"bull:{rig.env['VAMU_BULLMQ_QUEUE']}:id") or 0)
    role = new_primary.info("replication")["role"]
    new_primary.close()
    procs = (bridge, notify, worker)
    figures.update({
        "jobs": JOBS, "rate_per_s": RATE, "rows_when_killed": rows_at_kill,
        "jobs_added_when_killed": added_at_kill,
        "replica_promoted_s_after_kill": round(promoted_s, 1),
        "bridge_consuming_again_s_after_kill": round(bridge_back_s, 1),
        "llm_worker_consuming_again_s_after_kill": round(worker_back_s, 1),
        "seconds": round(time.monotonic() - t0, 1),
        **bullmq_counts(outcomes),
        "bullmq_jobs_retried": sum(1 for o in outcomes if o.get("attemptsMade", 0) > 1),
        "bullmq_jobs_created": created,
        "bullmq_jobs_matched_by_request_id": bridge.log_text().count(" matched as job "),
        "rows": sum(counts.values()), "rows_per_feature": features,
        **{f"status_{k}": v for k, v in sorted(counts.items())},
        "lost": JOBS - counts["succeeded"],
        "stuck": rig.stuck() if counts["succeeded"] != JOBS else {},
        "duplicates": rig.duplicates(),
        "retries_held_when_killed": retries_held_at_kill,
        "held_retries_succeeded": sum(1 for r in rig.jobs()
                                      if rig.job_token(r) in held and r.status == "succeeded"),
        # Beyond the held retries, which ask the LLM twice by design.
        "jobs_executed_twice": sum(1 for t, n in per_job.items() if n > 1 and t not in held),
        "jobs_with_attempts_gt_1": sum(1 for r in rig.jobs() if r.attempts > 1),
        "reaper_resends": notify.log_text().count("reaper re-sent"),
        **socket_counts(events, ("inspiration-ready", "chat-reply-ready")),
        "socketio_server_subscribed_again_s_after_kill": round(back_wall - killed_wall, 1),
        "socketio_events_published_while_unsubscribed": len(unheard),
        **rig.webhook_counts(),
        "new_primary_role": role,
        "processes_alive_at_end": all(p.alive for p in procs),
    })

    assert figures["processes_alive_at_end"], [(p.name, KOMBU_CRASH in p.log_text())
                                               for p in procs if not p.alive]
    assert retries_held_at_kill == HELD_RETRIES
    assert figures["held_retries_succeeded"] == HELD_RETRIES
    assert role == "master"
    assert figures.get("bullmq_completed") == JOBS, [o for o in outcomes
                                                     if o["state"] != "completed"][:5]
    assert features == mixed
    assert all(v == 0 for v in figures["duplicates"].values()), figures["duplicates"]
    assert counts["failed"] == 0
    assert counts["succeeded"] == JOBS, figures["stuck"]
    # Pub/sub keeps nothing: only jobs that ended before the Socket.IO server was subscribed
    # to the new primary again may miss their event (the webhook and the row still have it).
    assert back_wall < float("inf"), "the Socket.IO server never subscribed to the new primary"
    assert [job for job, finished in unheard if finished >= back_wall] == []
    assert figures["socketio_distinct"] == JOBS - len(unheard)
    assert figures["webhook_distinct_ids"] == JOBS
