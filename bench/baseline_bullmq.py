"""Baseline (a): the seed's design without Celery — one plain Python `bullmq` Worker per process.

It consumes the same `inspiration.generate` jobs from the same BullMQ queue and does the same
work in the processor, directly and asynchronously:

1. validate the job data (`InspirationRequest`);
2. fetch the user's context from the (fake) NestJS API with `httpx2.AsyncClient`;
3. call the (fake) LLM with the `openai` SDK (`AsyncOpenAI.responses.create`, the same
   prompt, strict JSON Schema and options as `vamu_tasks.llm.openai`), parse and validate the
   ideas;
4. write one finished `ai_jobs` row to PostgreSQL (psycopg 3 async, a small connection pool);
5. publish `inspiration-ready` to `user:{userId}` with the `@socket.io/redis-emitter` encoding
   of `vamu_tasks.notify.socketio`.

What it does not do, and what vamu-tasks pays for: no row before the work (a crash loses the
job's trace), no outbox (a crash between the commit and the emit loses the notification), no
retry policy, fallback or error kinds, no separate notification queue. The BullMQ job stays
active until the work is done, so a crashed worker's jobs come back after the lock expires.

Configured by environment variables (the same ones as vamu-tasks where they exist); stage
timings go through `probe.py`'s recorder (role `baseline`). Prints `baseline ready`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx2
import openai
import probe
import psycopg
import redis.asyncio as aioredis
from bullmq import Worker

from vamu_tasks.bridge.worker import bullmq_connection
from vamu_tasks.domain import Usage, UserContext
from vamu_tasks.inspiration import prompts
from vamu_tasks.inspiration.schemas import (
    InspirationRequest,
    InspirationResult,
    llm_output_schema,
)
from vamu_tasks.llm.pricing import cost_usd
from vamu_tasks.notify.socketio import encode_emit

INSERT = """
INSERT INTO ai_jobs (id, feature, user_id, status, request, result, attempts, source,
    source_ref, provider, model, input_tokens, output_tokens, cost_usd, created_at,
    started_at, finished_at, notify)
VALUES (%s, 'inspiration', %s, 'succeeded', %s, %s, 1, 'bullmq', %s, 'openai', %s, %s, %s,
    %s, %s, %s, %s, true)
"""


class Pool:
    """A fixed set of async PostgreSQL connections (psycopg_pool is not a dependency here)."""

    def __init__(self, url: str, size: int) -> None:
        self._url = url.replace("postgresql+psycopg://", "postgresql://")
        self._size = size
        self._free: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()

    async def open(self) -> None:
        for _ in range(self._size):
            self._free.put_nowait(await psycopg.AsyncConnection.connect(self._url, autocommit=True))

    async def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        conn = await self._free.get()
        try:
            await conn.execute(sql, params)
        finally:
            self._free.put_nowait(conn)

    async def close(self) -> None:
        while not self._free.empty():
            await self._free.get_nowait().close()


class Baseline:
    def __init__(self) -> None:
        env = os.environ
        self.queue = env.get("VAMU_BULLMQ_QUEUE", "vamu-ai")
        self.model = env.get("VAMU_OPENAI_MODEL", "gpt-5-mini")
        self.socketio_key = env.get("VAMU_SOCKETIO_KEY", "socket.io")
        self.api = httpx2.AsyncClient(
            base_url=env["VAMU_API_BASE_URL"],
            headers={"Authorization": f"Bearer {env.get('VAMU_API_TOKEN', '')}"},
            timeout=float(env.get("VAMU_API_TIMEOUT_S", "5")),
        )
        self.llm = openai.AsyncOpenAI(
            api_key=env["OPENAI_API_KEY"], base_url=env["OPENAI_BASE_URL"],
            timeout=float(env.get("VAMU_LLM_TIMEOUT_S", "60")), max_retries=0,
        )
        self.redis = aioredis.Redis.from_url(env["VAMU_REDIS_URL"])
        self.db = Pool(env["VAMU_DATABASE_URL"], int(env.get("VAMU_DATABASE_POOL_SIZE", "10")))

    async def process(self, job: Any, token: str) -> dict[str, Any]:
        job_id = uuid.uuid4()
        created = datetime.now(UTC)
        probe.record("task_start", job_id, time.time(), 0.0, str(job.id))
        t_task = time.perf_counter()
        request = InspirationRequest.model_validate(job.data)

        t = time.perf_counter()
        response = await self.api.get(f"/internal/users/{request.user_id}/context")
        response.raise_for_status()
        user = UserContext.model_validate(response.json())
        probe.record("context_fetch", job_id, time.time(), time.perf_counter() - t)

        t = time.perf_counter()
        answer = await self.llm.responses.create(
            model=self.model,
            instructions=prompts.SYSTEM,
            input=[{"role": "user", "content": prompts.user_prompt(
                user, request.count, request.locale, request.hint)}],
            max_output_tokens=2048,
            store=False,
            text={"format": {"type": "json_schema", "name": "event_ideas",
                             "schema": llm_output_schema(request.count), "strict": True}},
        )
        result = InspirationResult.model_validate_json(answer.output_text)
        probe.record("llm", job_id, time.time(), time.perf_counter() - t)

        usage = Usage(input_tokens=answer.usage.input_tokens,
                      output_tokens=answer.usage.output_tokens,
                      cache_read_tokens=answer.usage.input_tokens_details.cached_tokens)
        t = time.perf_counter()
        await self.db.execute(INSERT, (
            job_id, request.user_id,
            json.dumps(request.model_dump(mode="json", by_alias=True, exclude_none=True)),
            json.dumps(result.model_dump(mode="json", exclude_none=True)),
            f"bullmq:{self.queue}:{job.id}", answer.model or self.model,
            usage.input_tokens, usage.output_tokens, cost_usd(self.model, usage),
            created, created, datetime.now(UTC),
        ))
        probe.record("db_write", job_id, time.time(), time.perf_counter() - t)

        t = time.perf_counter()
        channel, body = encode_emit(
            "inspiration-ready",
            {"jobId": str(job_id), "feature": "inspiration", "status": "succeeded"},
            rooms=[f"user:{request.user_id}"], key=self.socketio_key,
        )
        await self.redis.publish(channel, body)
        probe.record("notify_publish", job_id, time.time(), time.perf_counter() - t)
        probe.record("task_run", job_id, time.time(), time.perf_counter() - t_task)
        return {"jobId": str(job_id)}

    async def serve(self, concurrency: int) -> None:
        await self.db.open()
        prefix = os.environ.get("VAMU_BULLMQ_PREFIX", "bull")
        worker = Worker(self.queue, self.process, {
            "connection": bullmq_connection(os.environ["VAMU_REDIS_URL"]),
            "prefix": prefix, "concurrency": concurrency, "autorun": False,
        })
        # design.md §4, pitfall 2: read the server version on the blocking connection first.
        await worker.blockingRedisConnection.getRedisVersion()
        run = asyncio.ensure_future(worker.run())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("baseline ready", flush=True)
        await stop.wait()
        await worker.close()
        await asyncio.gather(run, return_exceptions=True)
        await self.api.aclose()
        await self.llm.close()
        await self.redis.aclose()
        await self.db.close()


def main() -> None:
    probe.start_recorder("baseline")
    probe.install_counters()  # Redis commands per job, as for the vamu processes
    concurrency = int(os.environ.get("BENCH_BASELINE_CONCURRENCY", "250"))
    asyncio.run(Baseline().serve(concurrency))
    probe.flush()


if __name__ == "__main__":
    main()
