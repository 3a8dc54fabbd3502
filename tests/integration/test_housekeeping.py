"""Housekeeping on real PostgreSQL and Redis: one leader at a time, passes safe to run twice,
and an idle notify worker that runs its passes without a task or a log line."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.notify_worker import NotifyWorker
from tests.support.services import temporary_database
from vamu_tasks.bootstrap import Container
from vamu_tasks.domain import NewJob, Notification, Spend, event_id_for
from vamu_tasks.housekeeping import PERIODIC, Housekeeper, Periodic, lease_key
from vamu_tasks.leadership import RedisLeaderLease, lease_owner
from vamu_tasks.notify.sweeper import sweep_outbox
from vamu_tasks.reaper import resend_orphans
from vamu_tasks.settings import Settings
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.store.repository import SqlAlchemyJobStore


@pytest.fixture(scope="module")
def own_pg() -> Iterator[str]:
    """A database of this module's own: the passes below claim every orphan they find."""
    with temporary_database("vamu_housekeeping") as url:
        upgrade(url)
        yield url


@pytest.fixture
def store(own_pg: str) -> Iterator[SqlAlchemyJobStore]:
    store = SqlAlchemyJobStore.from_url(own_pg, transports=("webhook",))
    yield store
    store.close()


@pytest.fixture
def client(app_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(app_redis_url)
    yield client
    client.close()


class Recorder:
    """A periodic job that counts its passes."""

    def __init__(self, found: int = 0) -> None:
        self.calls = 0
        self.found = found

    def __call__(self, container: Container) -> int:
        self.calls += 1
        return self.found


def housekeeper(client: redis.Redis, key: str, job: Periodic, lease_s: float) -> Housekeeper:
    container = Container.__new__(Container)  # the passes here need only the settings
    container.settings = Settings(housekeeping_lease_s=lease_s, reaper_interval_s=0.05)
    lease = RedisLeaderLease(client, key, lease_s=lease_s, owner=lease_owner(f"n-{key[-4:]}"))
    return Housekeeper(container, lease, [job])


def wait_for(predicate, timeout: float) -> float | None:
    """Seconds until `predicate()` held, or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.01)
    return None


# --- leadership ------------------------------------------------------------------------------


def test_of_two_housekeepers_one_runs_the_passes_and_the_other_takes_over_when_it_dies(client):
    key = f"test-hk-{uuid.uuid4().hex[:8]}:leader"
    jobs = [Recorder(), Recorder()]
    a, b = (housekeeper(client, key, Periodic("t", "reaper_interval_s", j), 0.6) for j in jobs)
    a.start()
    assert wait_for(lambda: a.leading, 2) is not None
    b.start()
    try:
        time.sleep(1.0)
        assert (a.leading, b.leading) == (True, False)
        assert jobs[0].calls >= 5 and jobs[1].calls == 0

        # A SIGKILL: the leader stops renewing and never releases.
        a._stop.set()
        died = time.monotonic()
        took_over = wait_for(lambda: b.leading, 3)
        calls_before = jobs[1].calls
        time.sleep(0.3)
    finally:
        b.stop()
        a.stop()
    # The lease runs out (0.6 s), and the other tries every third of it.
    assert took_over is not None and took_over <= 0.6 + 0.2 + 0.3, time.monotonic() - died
    assert jobs[1].calls > calls_before


def test_a_housekeeper_that_stops_cleanly_hands_the_lead_over_at_once(client):
    key = f"test-hk-{uuid.uuid4().hex[:8]}:leader"
    a = housekeeper(client, key, Periodic("t", "reaper_interval_s", Recorder()), 5.0)
    b = housekeeper(client, key, Periodic("t", "reaper_interval_s", Recorder()), 5.0)
    a.start()
    assert wait_for(lambda: a.leading, 2) is not None
    b.start()
    try:
        a.stop()
        assert client.get(key) is None or client.get(key).decode() == b.lease.owner
        # Well before the 5 s lease would have run out: at b's next try (every 5/3 s).
        assert wait_for(lambda: b.leading, 2.5) is not None
    finally:
        b.stop()
    assert client.get(key) is None


def test_a_lease_is_renewed_and_released_only_by_its_owner(client):
    key = f"test-hk-{uuid.uuid4().hex[:8]}:leader"
    mine = RedisLeaderLease(client, key, lease_s=0.5, owner="mine")
    other = RedisLeaderLease(client, key, lease_s=0.5, owner="other")

    assert mine.hold() and not other.hold()
    other.release()  # not its lease: nothing happens
    assert mine.holder() == "mine"
    time.sleep(0.3)
    assert mine.hold()  # renewed: still ours after the first lease would have ended
    time.sleep(0.3)
    assert not other.hold() and mine.holder() == "mine"
    time.sleep(0.6)  # no renewal: it runs out and the other takes it
    assert other.hold() and not mine.hold()


def test_a_deployment_lease_key_carries_the_broker_prefix():
    assert lease_key(Settings(broker_key_prefix="blue:")) == "blue:vamu:housekeeping:leader"
    assert lease_key(Settings()) == "vamu:housekeeping:leader"


# --- quiet passes ----------------------------------------------------------------------------


def test_a_pass_logs_only_what_it_found_and_metrics_count_every_pass(client, caplog):
    from prometheus_client import REGISTRY

    def runs(name: str, outcome: str) -> float:
        value = REGISTRY.get_sample_value(
            "vamu_housekeeping_runs_total", {"task": name, "outcome": outcome})
        return value or 0.0

    key = f"test-hk-{uuid.uuid4().hex[:8]}:leader"
    name = f"test.{uuid.uuid4().hex[:6]}"
    results = iter([0, 0, 3])

    def job(container: Container) -> int:
        found = next(results, 0)
        if found:
            logging.getLogger("test.housekeeping").warning("found %d", found)
        return found

    keeper = housekeeper(client, key, Periodic(name, "reaper_interval_s", job), 2.0)
    with caplog.at_level(logging.INFO):
        keeper.contend_once()
        for _ in range(3):
            keeper.run_once(keeper.jobs[0])
        keeper.stop()

    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(" (")[0] for m in messages] == [
        f"housekeeping: {keeper.lease.owner} leads now", "found 3",
        f"housekeeping: {keeper.lease.owner} released the lead"]
    assert (runs(name, "nothing"), runs(name, "found")) == (2, 1)


def test_a_failing_pass_logs_once_and_is_counted_each_time(client, caplog):
    key = f"test-hk-{uuid.uuid4().hex[:8]}:leader"

    def broken(container: Container) -> int:
        raise ConnectionError("database unreachable")

    keeper = housekeeper(client, key, Periodic("test.broken", "reaper_interval_s", broken), 2.0)
    with caplog.at_level(logging.INFO, logger="vamu_tasks.housekeeping"):
        keeper.start()
        time.sleep(0.5)  # about ten passes, 0.05 s apart
        keeper.stop()

    failures = [r for r in caplog.records if "test.broken failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    assert "database unreachable" in failures[0].getMessage()


def test_every_periodic_job_has_a_unique_name_and_an_interval_setting_in_seconds():
    names = [job.name for job in PERIODIC]
    assert len(names) == len(set(names))
    for job in PERIODIC:
        assert isinstance(job.interval_s(Settings()), float), job
        assert job.interval_s(Settings()) > 0


# --- passes safe to run twice ----------------------------------------------------------------


def at_once(n: int, fn) -> None:
    """Run `fn()` in `n` threads released together."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors


def test_two_reapers_at_once_send_each_orphan_once(store):
    orphans = []
    for i in range(30):
        job, _ = store.create_job(NewJob("inspiration", "u-ada", {"userId": "u-ada"}, "api",
                                         source_ref=f"orphan-{uuid.uuid4().hex}-{i}"))
        store.start_attempt(job.id, f"dead-host:9:{i}", 0.05)
        orphans.append(job.id)
    time.sleep(0.2)
    sent: list[uuid.UUID] = []
    lock = threading.Lock()

    def send(spec, job_id):
        with lock:
            sent.append(job_id)

    settings = Settings(job_lease_s=10)
    at_once(2, lambda: resend_orphans(store, settings, None, send))

    counts = Counter(sent)
    assert sorted(counts) == sorted(orphans)
    assert set(counts.values()) == {1}


def test_two_outbox_sweeps_at_once_send_each_stale_notification_once(store):
    events = []
    for _ in range(30):
        job, _ = store.create_job(NewJob("inspiration", "u-ada", {"userId": "u-ada"}, "api",
                                         source_ref=f"sweep-{uuid.uuid4().hex}"))
        store.start_attempt(job.id)
        note = Notification(event_id_for(job.id, "inspiration-ready"), "inspiration-ready",
                            "u-ada", job.id, {"jobId": str(job.id)})
        store.succeed(job.id, {"ideas": []}, Spend(), [note])
        events.append(note.id)
    time.sleep(0.6)
    sent: list[uuid.UUID] = []
    lock = threading.Lock()

    def send(event_id):
        with lock:
            sent.append(event_id)

    at_once(2, lambda: sweep_outbox(store, send, stale_after_s=0.5, give_up_after_s=3600))

    counts = Counter(sent)
    assert sorted(counts) == sorted(events)
    assert set(counts.values()) == {1}


# --- the notify worker -----------------------------------------------------------------------


@pytest.fixture
def idle_pg() -> Iterator[str]:
    """An empty database: an idle worker must find nothing (the tests above leave orphans)."""
    with temporary_database("vamu_housekeeping_idle") as url:
        upgrade(url)
        yield url


@pytest.fixture
def notify_env(idle_pg: str, broker_url: str, app_redis_url: str, tmp_path: Path):
    prefix = f"vamu-hk-{uuid.uuid4().hex[:8]}:"
    env = {**os.environ, "VAMU_DATA_DIR": str(tmp_path / "data"), "VAMU_BROKER_URL": broker_url,
           "VAMU_BROKER_KEY_PREFIX": prefix, "VAMU_DATABASE_URL": idle_pg,
           "VAMU_REDIS_URL": app_redis_url, "VAMU_NOTIFY": "log",
           "VAMU_REAPER_INTERVAL_S": "0.2", "VAMU_OUTBOX_SWEEP_INTERVAL_S": "0.2",
           "VAMU_NOTIFY_CONCURRENCY": "2"}
    yield env
    client = redis.Redis.from_url(broker_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


HOUSEKEEPING_TASKS = ("vamu.jobs.reap", "vamu.notify.sweep_outbox")


def test_two_idle_notify_workers_have_one_leader_that_sweeps_without_tasks_or_log_lines(
    notify_env, tmp_path, client
):
    a = NotifyWorker(notify_env, tmp_path, "notify-a")
    b = NotifyWorker(notify_env, tmp_path, "notify-b")
    try:
        a.wait_ready()
        b.wait_ready()
        time.sleep(3)  # about 15 passes of each job at 0.2 s
        leaders = [w.metric("vamu_housekeeping_leader") for w in (a, b)]
        reaps = [w.metric("vamu_housekeeping_runs_total", task="vamu.jobs.reap",
                          outcome="nothing") for w in (a, b)]
        sweeps = [w.metric("vamu_housekeeping_runs_total", task="vamu.notify.sweep_outbox",
                           outcome="nothing") for w in (a, b)]
        key = f"{notify_env['VAMU_BROKER_KEY_PREFIX']}vamu:housekeeping:leader"
        holder = (client.get(key) or b"").decode()
        leader, other = (a, b) if leaders == [1, 0] else (b, a)

        assert sorted(leaders) == [0, 1]
        assert sorted(reaps)[0] == 0 and sorted(reaps)[1] >= 5
        assert sorted(sweeps)[0] == 0 and sorted(sweeps)[1] >= 5
        assert f":{leader.process.pid}:" in holder
        for worker in (a, b):
            text = worker.text()
            # No task per tick (what Flower would list), no INFO line per empty pass.
            assert not [t for t in HOUSEKEEPING_TASKS if f"Task {t}" in text], text[-2000:]
            assert "re-sent" not in text
        assert leader.text().count("leads now") == 1 and "leads now" not in other.text()

        # A clean shutdown gives the lead up; the other takes it at its next try (every 1 s).
        leader.stop()
        assert "released the lead" in leader.text()
        assert wait_for(lambda: other.metric("vamu_housekeeping_leader") == 1, 5) is not None
        assert f":{other.process.pid}:" in (client.get(key) or b"").decode()
    finally:
        a.stop()
        b.stop()


def test_a_notify_worker_started_with_no_beat_never_leads(notify_env, tmp_path, client):
    worker = NotifyWorker(notify_env, tmp_path, "notify-quiet", "--no-beat")
    try:
        worker.wait_ready()
        time.sleep(1.5)
        key = f"{notify_env['VAMU_BROKER_KEY_PREFIX']}vamu:housekeeping:leader"
        assert client.get(key) is None
        assert worker.metric("vamu_housekeeping_runs_total", task="vamu.jobs.reap",
                             outcome="nothing") == 0
        assert "housekeeping" not in worker.text()
    finally:
        worker.stop()


def test_a_lease_store_that_cannot_be_reached_is_logged_once_and_its_return_too(caplog):
    class Flaky:
        owner = "flaky"
        key = "k"
        up = False

        def hold(self) -> bool:
            if not self.up:
                raise ConnectionError("Redis refused the connection")
            return True

        def holder(self) -> str | None:
            return None

        def release(self) -> None:
            pass

    lease = Flaky()
    container = Container.__new__(Container)
    container.settings = Settings()
    keeper = Housekeeper(container, lease, [])
    with caplog.at_level(logging.INFO, logger="vamu_tasks.housekeeping"):
        for _ in range(3):
            keeper.contend_once()
        lease.up = True
        keeper.contend_once()

    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("housekeeping: cannot reach the lease (ConnectionError: Redis")
    assert messages[1:] == ["housekeeping: the lease can be reached again",
                            "housekeeping: flaky leads now (k, every )"]
    assert keeper.leading


def test_with_the_embedded_broker_a_file_lock_lets_one_process_lead(tmp_path):
    from vamu_tasks.leadership import FileLeaderLease

    path = tmp_path / "data" / "housekeeping.lock"
    first = FileLeaderLease(path, owner="first")
    second = FileLeaderLease(path, owner="second")

    assert first.hold() and first.hold()
    assert not second.hold()
    assert second.holder() == "first"
    first.release()
    assert second.hold() and not first.hold()
    second.release()
