"""The reaper finds a job whose task message the Redis broker lost, by asking the broker.

Real Redis (the broker DB, a key prefix of this test's own), real Celery messages sent as
vamu-tasks sends them, a kombu consumer that takes one without acknowledging it (a worker
holding it), and PostgreSQL rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection

from tests.support.services import REDIS_BROKER_DB, delete_keys, temporary_database
from tests.support.worker import sender_app
from vamu_tasks.broker_inventory import RedisBrokerInventory
from vamu_tasks.domain import NewJob
from vamu_tasks.features import FEATURES
from vamu_tasks.reaper import lost_messages
from vamu_tasks.sender import CelerySender
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.store.repository import SqlAlchemyJobStore

pytestmark = pytest.mark.integration


@pytest.fixture
def env(broker_url: str) -> Iterator[dict[str, str]]:
    prefix = f"vamu-lost-{uuid.uuid4().hex[:8]}:"
    yield {"VAMU_BROKER_URL": broker_url, "VAMU_BROKER_KEY_PREFIX": prefix}
    delete_keys(REDIS_BROKER_DB, f"{prefix}*")


@pytest.fixture
def inventory(env: dict[str, str]) -> Iterator[RedisBrokerInventory]:
    client = redis.Redis.from_url(env["VAMU_BROKER_URL"])
    inventory = RedisBrokerInventory(client, key_prefix=env["VAMU_BROKER_KEY_PREFIX"])
    yield inventory
    inventory.close()


@pytest.fixture
def store() -> Iterator[SqlAlchemyJobStore]:
    # A database of its own: the reaper looks at every queued row.
    with temporary_database() as url:
        upgrade(url)
        store = SqlAlchemyJobStore.from_url(url)
        yield store
        store.close()


def send(env: dict[str, str], job_id: uuid.UUID) -> None:
    app = sender_app(env)
    try:
        CelerySender(app).send(FEATURES["inspiration"], job_id)
    finally:
        app.close()


def queued(store: SqlAlchemyJobStore) -> uuid.UUID:
    job, _ = store.create_job(NewJob("inspiration", "u-ada", {"userId": "u-ada"}, "api"))
    return job.id


def test_a_waiting_message_and_a_taken_unacknowledged_one_are_both_held(env, inventory):
    waiting, taken = uuid.uuid4(), uuid.uuid4()
    send(env, taken)
    app = sender_app(env)
    try:
        with Connection(env["VAMU_BROKER_URL"], transport_options=app.conf.broker_transport_options
                        ) as conn:
            queue = app.amqp.queues["inspiration"]
            with conn.SimpleQueue(queue, no_ack=False) as simple:
                message = simple.get(timeout=5)  # taken, not acknowledged: in `unacked`
                send(env, waiting)

                held = inventory.task_ids({"inspiration"})

                assert message.headers["id"] == str(taken)
                assert held == {str(waiting), str(taken)}
                message.ack()
    finally:
        app.close()

    assert inventory.task_ids({"inspiration"}) == {str(waiting)}


def test_only_the_queued_job_whose_message_is_gone_is_sent_again_and_only_once(
    env, inventory, store
):
    kept, lost = queued(store), queued(store)
    send(env, kept)  # the lost job's message never reached the broker, or was dropped there
    naps: list[float] = []

    first = lost_messages(store, inventory, older_than_s=0, hold_s=60, sleep=naps.append)
    second = lost_messages(store, inventory, older_than_s=0, hold_s=60, sleep=naps.append)

    assert [job_id for job_id, _ in first] == [lost]
    assert naps, "a missing message is looked for a second time before it counts as lost"
    assert second == []  # sent again; the stale-queued check takes over from here


def test_a_job_too_young_or_already_started_is_left_alone(env, inventory, store):
    young = queued(store)
    started = queued(store)
    store.start_attempt(started, "host:1:a", 30)

    assert lost_messages(store, inventory, older_than_s=30, hold_s=60) == []
    assert [i for i, _ in lost_messages(store, inventory, older_than_s=0, hold_s=60)] == [young]


def test_a_backlog_too_long_to_read_is_not_judged(env, store):
    client = redis.Redis.from_url(env["VAMU_BROKER_URL"])
    small = RedisBrokerInventory(client, key_prefix=env["VAMU_BROKER_KEY_PREFIX"], max_messages=2)
    try:
        for _ in range(3):
            send(env, uuid.uuid4())
        lost = queued(store)

        assert small.task_ids({"inspiration"}) is None
        assert lost not in [i for i, _ in lost_messages(store, small, older_than_s=0, hold_s=60)]
    finally:
        small.close()
