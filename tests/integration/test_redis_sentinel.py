"""Clients built by vamu_tasks/redis_clients.py on a real primary, replica and three Sentinels.

The cluster is the test's own (redis-server on free ports, `tests/support/redis_sentinel.py`),
with `down-after-milliseconds` 1000: a failover takes about 2.5 s.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.redis_sentinel import MASTER, PASSWORD, SentinelCluster, wait_until
from vamu_tasks import redis_clients
from vamu_tasks.settings import Settings

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="needs redis-server on the PATH to run a primary, a replica and three Sentinels",
    ),
]

# Without the fix in redis_clients.SentinelConnection a command in flight when the primary dies
# dials the dead primary until its retries run out (about a minute for the bridge's BullMQ client).
FOLLOWS_WITHIN_S = 15.0


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VAMU_"):
            monkeypatch.delenv(name)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    started = SentinelCluster(tmp_path / "sentinel", master=MASTER)
    try:
        yield started.start()
    finally:
        started.stop()


def settings_for(cluster: SentinelCluster, db: int) -> Settings:
    # The URL names the primary's port, but only its database and password count.
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=cluster.url(cluster.primary_port, db),
        broker_url=cluster.url(cluster.primary_port, db + 1),
        redis_sentinels=cluster.env_value,  # type: ignore[arg-type]
        redis_sentinel_master=MASTER,
    )


def direct(cluster: SentinelCluster, port: int, db: int) -> redis.Redis:
    return redis.Redis(port=port, db=db, password=PASSWORD)


def test_a_client_writes_to_the_urls_database_on_the_primary_the_sentinels_name(
    cluster: SentinelCluster,
) -> None:
    s = settings_for(cluster, 5)

    app, broker = redis_clients.app_redis(s), redis_clients.broker_redis(s)
    app.set("sentinel-probe", "app")
    broker.set("sentinel-probe", "broker")

    primary_db5, primary_db6 = direct(cluster, cluster.primary_port, 5), direct(
        cluster, cluster.primary_port, 6
    )
    assert primary_db5.get("sentinel-probe") == b"app"
    assert primary_db6.get("sentinel-probe") == b"broker"
    for client in (app, broker, primary_db5, primary_db6):
        client.close()


def test_a_blocking_read_in_flight_when_the_primary_dies_is_answered_by_the_promoted_replica(
    cluster: SentinelCluster,
) -> None:
    client = redis_clients.app_redis(settings_for(cluster, 5))
    client.ping()
    got: dict[str, Any] = {}

    def wait_for_item() -> None:
        try:
            got["item"] = client.blpop(["sentinel-queue"], timeout=40)
        except redis.RedisError as exc:
            got["error"] = exc

    reader = threading.Thread(target=wait_for_item, daemon=True)
    reader.start()
    time.sleep(0.5)
    cluster.primary.kill()
    killed = time.monotonic()
    assert wait_until(lambda: cluster.primary_port_now() == cluster.replica_port, 30, 0.05)
    promoted = direct(cluster, cluster.replica_port, 5)
    promoted.rpush("sentinel-queue", "after-failover")
    reader.join(FOLLOWS_WITHIN_S)
    promoted.close()

    assert got.get("item") == (b"sentinel-queue", b"after-failover"), got
    assert time.monotonic() - killed < FOLLOWS_WITHIN_S
    client.close()


def test_the_bridges_bullmq_client_follows_a_failover_in_the_middle_of_a_blocking_wait(
    cluster: SentinelCluster,
) -> None:
    async def scenario() -> tuple[Any, float]:
        client = redis_clients.bullmq_sentinel_client(settings_for(cluster, 5))
        assert client is not None
        await client.ping()
        # BullMQ's worker waits like this for the next job's marker.
        waiting = asyncio.ensure_future(client.bzpopmin("bull:sentinel:marker", 40))
        await asyncio.sleep(0.5)
        cluster.primary.kill()
        killed = time.monotonic()
        loop = asyncio.get_running_loop()
        promoted_ok = await loop.run_in_executor(
            None,
            lambda: wait_until(lambda: cluster.primary_port_now() == cluster.replica_port, 30),
        )
        assert promoted_ok
        promoted = direct(cluster, cluster.replica_port, 5)
        promoted.zadd("bull:sentinel:marker", {"0": 0})
        promoted.close()
        try:
            result = await asyncio.wait_for(waiting, FOLLOWS_WITHIN_S)
        finally:
            await client.aclose()
            for sentinel in client.connection_pool.sentinel_manager.sentinels:
                await sentinel.aclose()
        return result, time.monotonic() - killed

    result, seconds = asyncio.run(scenario())

    assert result == ("bull:sentinel:marker", "0", 0.0)
    assert seconds < FOLLOWS_WITHIN_S
