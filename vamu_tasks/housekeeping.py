"""Housekeeping: periodic passes that one notify worker of many runs, in process.

Every `python -m workers.notify` (unless `--no-beat`) starts a `Housekeeper`. It contends for
one lease (`leadership.py`; in VAMU_REDIS_URL, `VAMU_HOUSEKEEPING_LEASE_S` = 3 s, renewed every
third of it). While it holds the lease it runs each job of `PERIODIC` on its own interval, in a
thread of its own, as a plain function call: no Celery task is published per tick, so Flower
lists none, and a pass that finds nothing logs nothing. Gaining and losing the lead are logged,
and `vamu_housekeeping_leader` is 1 on the leader. A leader that dies stops renewing; another
worker takes over within the lease plus one try (4 s).

Two leaders can overlap for a moment (a leader paused for longer than its lease, a Redis
failover that lost the key). That is harmless: every pass claims what it acts on in the same
transaction that finds it, so a second pass finds nothing (tests/integration/test_housekeeping.py).

To add a periodic job, add one `Periodic` to `PERIODIC`: its name (logs, metrics, docs), the
name of the `Settings` field holding its interval in seconds, and a function taking the
`Container` and returning how much it found or did (0: nothing, and then it logs nothing).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vamu_tasks.bootstrap import Container
from vamu_tasks.features import DELIVER_TASK, NOTIFY_QUEUE, FeatureSpec
from vamu_tasks.leadership import FileLeaderLease, LeaderLease, RedisLeaderLease, lease_owner
from vamu_tasks.metrics import HOUSEKEEPING_LEADER, HOUSEKEEPING_RUNS
from vamu_tasks.settings import Settings

log = logging.getLogger(__name__)

# A failing pass (the database is away) logs once, then at most this often while it fails.
ERROR_LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class Periodic:
    name: str  # what logs and metrics call it
    interval_setting: str  # the Settings field with its interval in seconds
    run: Callable[[Container], int]  # how much it found or did; 0 means nothing (and no log)

    def interval_s(self, settings: Settings) -> float:
        return float(getattr(settings, self.interval_setting))


def reap_jobs(container: Container) -> int:
    """The reaper (`reaper.py`): re-send orphaned, overdue and lost jobs."""
    from vamu_tasks.app import app
    from vamu_tasks.reaper import resend_orphans

    sender = container.task_sender(app)

    def send(spec: FeatureSpec, job_id: uuid.UUID) -> None:
        sender.send(spec, job_id)

    return resend_orphans(container.store, container.settings, container.broker_inventory, send)


def sweep_outbox(container: Container) -> int:
    """The outbox sweep (`notify/sweeper.py`): give up old, re-send stale notifications."""
    from vamu_tasks.app import app
    from vamu_tasks.notify.sweeper import sweep_outbox as sweep
    from vamu_tasks.task_runner import event_kwargs

    def send(event_id: uuid.UUID) -> None:
        app.send_task(DELIVER_TASK, kwargs=event_kwargs(event_id), queue=NOTIFY_QUEUE)

    settings = container.settings
    return sweep(
        container.store,
        send,
        stale_after_s=settings.outbox_stale_after_s,
        give_up_after_s=settings.outbox_give_up_after_s,
    )


def batch_tier(container: Container) -> int:
    """The batch tier (`batches/tasks.py`): send waiting jobs, poll and settle batches."""
    from vamu_tasks.batches.tasks import batch_pass

    return batch_pass(container)


PERIODIC: list[Periodic] = [
    Periodic("vamu.jobs.reap", "reaper_interval_s", reap_jobs),
    Periodic("vamu.notify.sweep_outbox", "outbox_sweep_interval_s", sweep_outbox),
    Periodic("vamu.batches.tick", "batch_poll_interval_s", batch_tier),
]


def lease_key(settings: Settings) -> str:
    """One lease per deployment: deployments sharing a Redis differ by their broker prefix."""
    return f"{settings.broker_key_prefix or ''}{settings.housekeeping_key}:leader"


def build_lease(container: Container, node: str | None = None) -> LeaderLease:
    """The lease for this process: in the app Redis, or a file lock with the embedded broker
    (one machine, perhaps no Redis at all)."""
    settings = container.settings
    owner = lease_owner(node)
    if settings.is_embedded_broker:
        return FileLeaderLease(settings.data_dir.resolve() / "housekeeping.lock", owner=owner)
    return RedisLeaderLease(
        container.app_redis(),
        lease_key(settings),
        lease_s=settings.housekeeping_lease_s,
        owner=owner,
    )


class Housekeeper:
    """Contends for the lease from one thread; runs each periodic job from another while it
    leads. `start()` once, `stop()` at shutdown (it releases the lease)."""

    def __init__(
        self,
        container: Container,
        lease: LeaderLease,
        jobs: Sequence[Periodic] | None = None,  # default: PERIODIC as it is now
        *,
        lease_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.container = container
        self.lease = lease
        self.jobs = list(PERIODIC if jobs is None else jobs)
        self.lease_s = container.settings.housekeeping_lease_s if lease_s is None else lease_s
        self._clock = clock
        # Until when this process may act as leader: the start of its last successful renewal
        # plus the lease, so it stops before Redis lets another take over.
        self._valid_until = 0.0
        self._announced = False
        self._unreachable = False  # the lease store failed on the last try
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def leading(self) -> bool:
        return self._clock() < self._valid_until

    def start(self) -> None:
        HOUSEKEEPING_LEADER.set(0)
        self._threads = [threading.Thread(target=self._contend, name="housekeeping-lease")]
        self._threads += [
            threading.Thread(target=self._every, args=(job,), name=f"housekeeping-{job.name}")
            for job in self.jobs
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the passes (a running one gets `timeout` to finish), then give the lease up."""
        if self._stop.is_set():
            return
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        was_leading = self.leading or self._announced
        self._valid_until = 0.0
        try:
            self.lease.release()
        except Exception as exc:  # the lease runs out by itself
            log.warning("housekeeping: could not release the lead (%s); it runs out", exc)
        if was_leading:
            log.info("housekeeping: %s released the lead", self.lease.owner)
        HOUSEKEEPING_LEADER.set(0)

    # -- the lease --

    def renew_every_s(self) -> float:
        return self.lease_s / 3

    def contend_once(self) -> None:
        """Take or renew the lease once, and say so when leadership changes."""
        started = self._clock()
        error: Exception | None = None
        try:
            held = self.lease.hold()
        except Exception as exc:  # Redis away: we cannot renew; the lease runs out by itself
            held, error = False, exc
        if held:
            self._valid_until = started + self.lease_s
        elif error is None:
            self._valid_until = 0.0  # someone else holds it
        if error is not None and not self._unreachable:
            log.warning(
                "housekeeping: cannot reach the lease (%s: %s); trying every %gs",
                type(error).__name__,
                error,
                self.renew_every_s(),
            )
        elif error is None and self._unreachable:
            log.info("housekeeping: the lease can be reached again")
        self._unreachable = error is not None
        if self.leading and not self._announced:
            self._announced = True
            HOUSEKEEPING_LEADER.set(1)
            log.info(
                "housekeeping: %s leads now (%s, every %s)",
                self.lease.owner,
                getattr(self.lease, "key", "file lock"),
                ", ".join(
                    f"{j.name} {j.interval_s(self.container.settings):g}s" for j in self.jobs
                ),
            )
        elif not self.leading and self._announced:
            self._announced = False
            HOUSEKEEPING_LEADER.set(0)
            why = f"cannot renew the lease: {error}" if error else f"held by {self._holder()}"
            log.warning("housekeeping: %s lost the lead (%s)", self.lease.owner, why)

    def _holder(self) -> str | None:
        try:
            return self.lease.holder()
        except Exception:
            return None

    def _contend(self) -> None:
        while not self._stop.is_set():
            self.contend_once()
            self._stop.wait(self.renew_every_s())

    # -- the passes --

    def run_once(self, job: Periodic) -> int | None:
        """One pass of `job` if this process leads (None when it does not); raises what the
        pass raised."""
        if not self.leading:
            return None
        try:
            found = job.run(self.container)
        except Exception:
            HOUSEKEEPING_RUNS.labels(job.name, "error").inc()
            raise
        HOUSEKEEPING_RUNS.labels(job.name, "found" if found else "nothing").inc()
        return found

    def _every(self, job: Periodic) -> None:
        interval = job.interval_s(self.container.settings)
        failing = False
        last_logged = 0.0
        # At a fixed rate, as beat did: a pass that takes a while does not push the next one
        # back; one that takes longer than the interval is followed by the next at once.
        due = time.monotonic() + interval
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            due = max(due + interval, time.monotonic())
            try:
                self.run_once(job)
            except Exception as exc:  # the database or broker may be away; the next pass tries
                now = self._clock()
                if not failing or now - last_logged >= ERROR_LOG_EVERY_S:
                    log.warning(
                        "housekeeping: %s failed (%s: %s); tried again every %gs",
                        job.name,
                        type(exc).__name__,
                        exc,
                        interval,
                        exc_info=not failing,
                    )
                    last_logged = now
                failing = True
                continue
            if failing:
                log.info("housekeeping: %s works again", job.name)
                failing = False


_housekeeper: Housekeeper | None = None


def run_in_this_worker() -> None:
    """Start a `Housekeeper` when this Celery worker is ready and stop it when it begins to shut
    down (before the container closes). Called by `workers.notify` unless `--no-beat`."""
    from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

    from vamu_tasks.bootstrap import get_container

    @worker_ready.connect(weak=False)
    def _start(sender: object = None, **_: object) -> None:
        global _housekeeper
        container = get_container()
        node = getattr(sender, "hostname", None)  # the consumer's node name, notify@host
        _housekeeper = Housekeeper(container, build_lease(container, node))
        _housekeeper.start()

    # At the start of a warm shutdown, while the container is still open; `worker_shutdown`
    # covers a shutdown that did not come from a signal (`celery control shutdown`).
    @worker_shutting_down.connect(weak=False)
    @worker_shutdown.connect(weak=False)
    def _stop(**_: object) -> None:
        global _housekeeper
        if _housekeeper is not None:
            _housekeeper.stop()
            _housekeeper = None
