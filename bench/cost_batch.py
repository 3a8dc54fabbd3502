"""The cost scenario's batch row: "Inspire me" through the batch tier, priced from the rows.

The same inspiration jobs as `cost.py`'s (100 active users, 3 ideas each), accepted with a
`deliverBy` 6 hours away: they are stored `batched`, collected by the tier's own pass
(`vamu_tasks.batches.service.tick`) into one vendor batch through the real adapter and SDK,
answered by the fake LLM's batch API, and committed by the next pass through the use case's
validation, with one notification each. Runs on a throwaway SQLite database (the tier's store
is SQL); the dollars come from the rows, as `vamu-tasks spend` reads them.
"""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from vamu_tasks.batches.policy import BatchPolicy
from vamu_tasks.batches.service import BatchConfig, BatchDeps, tick
from vamu_tasks.context.static import StaticUserContextClient
from vamu_tasks.domain import JobFilter
from vamu_tasks.features import FeatureSpec
from vamu_tasks.llm.anthropic import AnthropicProvider
from vamu_tasks.llm.anthropic_batch import AnthropicBatches
from vamu_tasks.llm.openai import OpenAIProvider
from vamu_tasks.llm.openai_batch import OpenAIBatches
from vamu_tasks.ports import BatchLLM
from vamu_tasks.store.batches import SqlAlchemyBatchStore
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.store.repository import Database, SqlAlchemyJobStore
from vamu_tasks.submit import submit_job
from vamu_tasks.testing.fake_llm import FakeLLMServer


class NoTasks:
    """The tier must send no Celery task for a job it commits: any send is counted."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, spec: FeatureSpec, job_id: uuid.UUID, headers: Any = None, **_: Any) -> str:
        self.sent += 1
        return str(job_id)


def batch_api(vendor: str, model: str, key: str, server: FakeLLMServer) -> BatchLLM:
    if vendor == "openai":
        return OpenAIBatches(
            OpenAIProvider(api_key=SecretStr(key), model=model, base_url=server.openai_base_url)
        )
    return AnthropicBatches(
        AnthropicProvider(api_key=SecretStr(key), model=model, base_url=server.anthropic_base_url)
    )


def run_batch_tier(
    vendor: str, model: str, key: str, users: dict[str, Any], jobs: int, responder: Any
) -> dict[str, Any]:
    server = FakeLLMServer(api_key=key, responder=responder)
    with tempfile.TemporaryDirectory() as tmp, server:
        url = f"sqlite:///{Path(tmp) / 'batch.db'}"
        upgrade(url)
        db = Database.from_url(url)
        store = SqlAlchemyJobStore(db, transports=["log"])
        sender = NoTasks()
        notified: Counter[uuid.UUID] = Counter()
        api = batch_api(vendor, model, key, server)
        deps = BatchDeps(
            batches=SqlAlchemyBatchStore(db, transports=["log"]),
            jobs=store,
            api=api,
            context=StaticUserContextClient(users),
            sender=sender,
            notify=lambda ids: notified.update(ids),
            config=BatchConfig(
                max_jobs=jobs, max_wait_s=0, poll_interval_s=0, sync_margin_s=900,
                max_output_tokens=2048, hold_s=120,
            ),
        )
        deliver_by = (datetime.now(UTC) + timedelta(hours=6)).isoformat()
        user_ids = sorted(users)
        for n in range(jobs):
            data = {"userId": user_ids[n % len(user_ids)], "count": 3, "deliverBy": deliver_by}
            submit_job(store, sender, "inspiration", data, source="cli",
                       batch=BatchPolicy(sync_margin_s=900))
        sent = tick(deps)
        server.complete_batches()
        settled = tick(deps)
        rows = store.list_jobs(JobFilter(limit=jobs + 1))
        db.close()
    assert len(sent.submitted) == 1, sent
    assert settled.committed == jobs and sender.sent == 0, (settled, sender.sent)
    assert {row.status for row in rows} == {"succeeded"} and len(rows) == jobs
    assert len(notified) == jobs and set(notified.values()) == {1}, "one notification a job"
    cost = sum((row.cost_usd or Decimal(0) for row in rows), Decimal(0))
    return {
        "jobs": jobs,
        "batches": len(sent.submitted),
        "committed": settled.committed,
        "notified_once": len(notified),
        "usd_per_1000_jobs": float((cost * 1000 / jobs).quantize(Decimal("0.0001"))),
        "input_tokens": sum(row.input_tokens or 0 for row in rows),
        "output_tokens": sum(row.output_tokens or 0 for row in rows),
    }
