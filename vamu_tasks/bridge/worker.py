"""The bridge process: BullMQ workers on the NestJS queues that hand each job to Celery.

Two queues: `vamu-ai` jobs complete at once with `{jobId, celeryTaskId}`; `vamu-ai-sync` jobs
stay active until the job row ends, then complete with its result (or fail with its kind).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from bullmq import UnrecoverableError, Worker

from vamu_tasks import redis_clients
from vamu_tasks.batches.policy import BatchPolicy, batch_policy
from vamu_tasks.bridge.contract import FailedReasonKind, Refused, SyncJobResult, failed_reason
from vamu_tasks.bridge.quota import RedisHourlyQuota
from vamu_tasks.bridge.service import Accepted, Quota, SpendCheck, accept_job, trace_headers
from vamu_tasks.llm.spend_budget import Limits, RedisSpendBudget
from vamu_tasks.metrics import BRIDGE_JOBS
from vamu_tasks.otel.bullmq import job_span
from vamu_tasks.ports import JobStore
from vamu_tasks.settings import Settings
from vamu_tasks.submit import TaskSender
from vamu_tasks.tracing import describe, trace_context

log = logging.getLogger("vamu_tasks.bridge")


def bullmq_connection(redis_url: str) -> dict[str, Any]:
    """Connection options for the Python BullMQ worker.

    redis-py 8 defaults `socket_timeout` to 5 s, which cuts BullMQ's blocking wait short and
    delays pickup by 5-10 s after an idle spell: a blocking client must not time out.
    """
    url = urlsplit(redis_url)
    options: dict[str, Any] = {
        "host": url.hostname or "localhost",
        "port": url.port or 6379,
        "db": int(url.path.lstrip("/") or 0),
        "username": unquote(url.username) if url.username else None,
        "password": unquote(url.password) if url.password else None,
        "socket_timeout": None,
        "socket_keepalive": True,
    }
    if url.scheme == "rediss":
        options["ssl"] = True
    return options


def retryable(exc: Exception, job_id: uuid.UUID | None = None) -> Exception:
    """An ordinary error, which BullMQ retries per the job's `attempts`, in the failedReason form.

    The database, the broker or Redis being down is not the job's fault: `internal`, the kind a
    job row gets for the same outage, then what went wrong.
    """
    return RuntimeError(failed_reason("internal", f"{type(exc).__name__}: {exc}", job_id))


@dataclass
class BridgeDeps:
    store: JobStore
    sender: TaskSender
    quota: Quota
    closers: list[Any]
    budget: SpendCheck | None = None
    batch: BatchPolicy | None = None

    def close(self) -> None:
        for close in self.closers:
            close()


def build_deps(settings: Settings) -> BridgeDeps:
    """The bridge process's composition root."""
    from vamu_tasks.app import app
    from vamu_tasks.sender import CelerySender
    from vamu_tasks.store.repository import SqlAlchemyJobStore

    store = SqlAlchemyJobStore.from_url(
        settings.effective_database_url,
        transports=settings.notify,
        pool_size=settings.database_pool_size,
    )
    quota_redis = redis_clients.app_redis(settings)
    quota = RedisHourlyQuota(
        quota_redis, limit=settings.quota_jobs_per_user_per_hour, prefix=settings.quota_key_prefix
    )
    limits = Limits(settings.budget_user_usd_per_day, settings.budget_provider_usd_per_day)
    budget = None
    if limits.user_usd_per_day is not None:
        budget = RedisSpendBudget(quota_redis, limits, prefix=settings.budget_key_prefix)
    closers = [store.close, quota_redis.close]
    return BridgeDeps(store, CelerySender(app), quota, closers, budget, batch_policy(settings))


class Bridge:
    def __init__(self, settings: Settings, deps: BridgeDeps) -> None:
        self._settings = settings
        self._deps = deps
        size = settings.bridge_concurrency + settings.bridge_sync_concurrency
        # The store and the Celery producer are blocking: they run beside the event loop.
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="bridge")
        self._workers: list[Worker] = []
        self._runs: list[asyncio.Task[Any]] = []

    def _opts(self, concurrency: int) -> dict[str, Any]:
        s = self._settings
        return {
            # Through the Sentinels when they are set: a client of its own per worker.
            "connection": redis_clients.bullmq_sentinel_client(s) or bullmq_connection(s.redis_url),
            "prefix": s.bullmq_prefix,
            "concurrency": concurrency,
            "lockDuration": s.bridge_lock_duration_ms,
            "stalledInterval": s.bridge_stalled_interval_ms,
            "maxStalledCount": s.bridge_max_stalled_count,
            "autorun": False,
        }

    async def start(self) -> None:
        s = self._settings
        plan = [
            (s.bullmq_queue, self._process_async, s.bridge_concurrency),
            (s.bullmq_sync_queue, self._process_sync, s.bridge_sync_concurrency),
        ]
        for queue, processor, concurrency in plan:
            worker = Worker(queue, processor, self._opts(concurrency))
            worker.on("error", lambda err, *_: log.error("bullmq worker error: %s", err))
            # The Python port never reads the server version on its blocking connection and
            # then rounds block timeouts to whole seconds; reading it first fixes that.
            await worker.blockingRedisConnection.getRedisVersion()
            self._workers.append(worker)
            self._runs.append(asyncio.ensure_future(worker.run()))
        log.info(
            "bridge consuming %s and %s (prefix %s)",
            s.bullmq_queue,
            s.bullmq_sync_queue,
            s.bullmq_prefix,
        )

    async def close(self) -> None:
        """Finish the jobs in hand, take no new ones, then release connections."""
        await asyncio.gather(*(w.close() for w in self._workers), return_exceptions=True)
        await asyncio.gather(*self._runs, return_exceptions=True)
        self._executor.shutdown(wait=True)
        self._deps.close()

    async def _accept(self, job: Any) -> Accepted:
        loop = asyncio.get_running_loop()
        data = job.data
        queue = str(job.queue.name)
        fields = trace_headers(data) if isinstance(data, dict) else {}
        # A job on the sync queue has a caller waiting for it: never batched.
        batch = None if queue == self._settings.bullmq_sync_queue else self._deps.batch
        with (
            trace_context({**fields, "bullmqJob": f"{queue}/{job.id}"}),
            job_span(job, queue) as span,
        ):
            try:
                # In the job's context: the Celery publish is a child of the bridge's span.
                accepted = await loop.run_in_executor(
                    self._executor,
                    contextvars.copy_context().run,
                    lambda: accept_job(
                        self._deps.store,
                        self._deps.sender,
                        self._deps.quota,
                        name=job.name,
                        data=data,
                        queue=queue,
                        bullmq_job_id=str(job.id),
                        budget=self._deps.budget,
                        batch=batch,
                    ),
                )
            except Refused as refused:
                BRIDGE_JOBS.labels(queue, "refused", refused.refusal).inc()
                span.set_attribute("vamu.refusal", refused.refusal)
                log.warning("refused bullmq job %s/%s: %s", queue, job.id, refused.failed_reason)
                raise UnrecoverableError(refused.failed_reason) from refused
            except Exception as exc:
                raise retryable(exc) from exc
            BRIDGE_JOBS.labels(queue, "accepted" if accepted.created else "matched", "").inc()
            span.set_attribute("vamu.job.id", str(accepted.job_id))
            log.info(
                "bullmq job %s/%s %s as job %s (celery %s) %s",
                queue,
                job.id,
                "accepted" if accepted.created else "matched",
                accepted.job_id,
                accepted.celery_task_id,
                describe(fields),
            )
            return accepted

    async def _process_async(self, job: Any, token: str) -> dict[str, Any]:
        return (await self._accept(job)).as_return_value()

    async def _process_sync(self, job: Any, token: str) -> dict[str, Any]:
        accepted = await self._accept(job)
        loop = asyncio.get_running_loop()
        timeout_s = self._settings.bridge_sync_timeout_s
        deadline = loop.time() + timeout_s
        while True:
            try:
                row = await loop.run_in_executor(
                    self._executor, self._deps.store.get_job, accepted.job_id
                )
            except Exception as exc:
                raise retryable(exc, accepted.job_id) from exc
            if row is not None and row.is_terminal:
                break
            if loop.time() >= deadline:
                raise UnrecoverableError(
                    failed_reason(
                        "sync_timeout",
                        f"did not finish within {timeout_s:g}s; it goes on, and the app is "
                        "notified when it ends",
                        accepted.job_id,
                    )
                )
            await asyncio.sleep(0.05)
        if row.status != "succeeded":
            # The row's kind is one of errors.ErrorKind, which the store keeps as a string.
            kind = cast(FailedReasonKind, row.error_kind or "internal")
            raise UnrecoverableError(failed_reason(kind, row.error_message or "", row.id))
        value = SyncJobResult(
            jobId=accepted.job_id,
            celeryTaskId=accepted.celery_task_id,
            status="succeeded",
            result=dict(row.result or {}),
        )
        return value.model_dump(mode="json")
