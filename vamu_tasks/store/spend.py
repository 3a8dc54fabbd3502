"""What the LLM calls cost, from the job rows: tokens, cache reads and writes, dollars, savings.

`vamu-tasks spend` prints it. The rows are the source of truth for spend (the Redis budget
counters are only for holding budgets), and they carry each job's tokens and cost over all its
attempts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

import sqlalchemy as sa

from vamu_tasks.llm.pricing import price_for
from vamu_tasks.store.models import AiJob
from vamu_tasks.store.repository import Database

GroupBy = Literal["user", "feature", "model", "day"]
_COLUMNS = {
    "user": AiJob.user_id,
    "feature": AiJob.feature,
    "model": AiJob.model,
    "day": sa.func.date(AiJob.created_at),
}


@dataclass
class SpendLine:
    """One group's spend; `saved_usd` is what the cache took off the full input price."""

    key: str
    jobs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    saved_usd: Decimal = Decimal(0)
    models: set[str] = field(default_factory=set)

    def add(self, other: SpendLine) -> None:
        self.jobs += other.jobs
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cost_usd += other.cost_usd
        self.saved_usd += other.saved_usd
        self.models |= other.models


def cache_savings(model: str, read: int, written: int) -> Decimal:
    """Dollars the cache saved: reads below the input price, less writes above it.

    Writes are priced at the 5-minute rate: the row does not keep which TTL they used.
    """
    price = price_for(model)
    if price is None:
        return Decimal(0)
    write = price.cache_write if price.cache_write is not None else price.input
    saved = read * (price.input - price.cache_read) - written * (write - price.input)
    return saved / Decimal(1_000_000)


def spend_by(db: Database, by: GroupBy, since: datetime | None) -> list[SpendLine]:
    """One line per group (most expensive first); jobs that made no LLM call are left out."""
    key = _COLUMNS[by]
    query = (
        sa.select(
            key,
            AiJob.model,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(AiJob.input_tokens), 0),
            sa.func.coalesce(sa.func.sum(AiJob.output_tokens), 0),
            sa.func.coalesce(sa.func.sum(AiJob.cache_read_tokens), 0),
            sa.func.coalesce(sa.func.sum(AiJob.cache_write_tokens), 0),
            sa.func.coalesce(sa.func.sum(AiJob.cost_usd), 0),
        )
        .where(AiJob.model.is_not(None))
        .group_by(key, AiJob.model)
    )
    if since is not None:
        query = query.where(AiJob.created_at >= since)
    lines: dict[str, SpendLine] = {}
    with db.transaction() as session:
        for group, model, jobs, inp, out, read, written, cost in session.execute(query):
            part = SpendLine(
                str(group),
                int(jobs),
                int(inp),
                int(out),
                int(read),
                int(written),
                Decimal(cost),
                cache_savings(str(model), int(read), int(written)),
                {str(model)},
            )
            lines.setdefault(str(group), SpendLine(str(group))).add(part)
    return sorted(lines.values(), key=lambda line: (-line.cost_usd, line.key))
