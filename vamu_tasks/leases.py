"""`LeaseKeeper`: keeps the leases of the jobs this process runs fresh, from one thread.

A job's lease says "a live worker runs me". A redelivered copy of its task sees the lease and
does nothing; if the worker dies, the lease runs out and the reaper hands the job out again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from vamu_tasks.ports import JobStore

log = logging.getLogger(__name__)


def process_owner() -> str:
    """This process, as the lease owner other workers see."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaseKeeper:
    def __init__(self, store: JobStore, *, lease_s: float, renew_every_s: float) -> None:
        self.store = store
        self.owner = process_owner()
        self.lease_s = lease_s
        self._renew_every_s = renew_every_s
        self._active: set[tuple[uuid.UUID, str]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def new_owner(self) -> str:
        """An owner for one attempt: every attempt, even in the same process, is distinct, so
        a copy of a task delivered to another thread of this process is refused too."""
        return f"{self.owner}:{uuid.uuid4().hex[:12]}"

    @contextmanager
    def hold(self, job_id: uuid.UUID, owner: str) -> Iterator[None]:
        """Renew this attempt's lease for as long as the block runs."""
        with self._lock:
            self._active.add((job_id, owner))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._active.discard((job_id, owner))

    def _run(self) -> None:
        while not self._stop.wait(self._renew_every_s):
            with self._lock:
                active = list(self._active)
            try:
                self.store.renew_leases(active, self.lease_s)
            except Exception as exc:  # the database may be away; the next round tries again
                log.warning("could not renew %d job lease(s): %s", len(active), exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
