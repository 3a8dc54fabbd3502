"""`vamu-tasks spend`: what the LLM bill is made of, and `spend reset` for a user's budget."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import click

from vamu_tasks import redis_clients
from vamu_tasks.llm.spend_budget import Limits, RedisSpendBudget
from vamu_tasks.settings import Settings
from vamu_tasks.store.repository import Database
from vamu_tasks.store.spend import SpendLine, spend_by


def _money(value: Decimal) -> str:
    return f"{value:.4f}"


def _as_dict(line: SpendLine) -> dict[str, Any]:
    return {
        "key": line.key,
        "jobs": line.jobs,
        "inputTokens": line.input_tokens,
        "cacheReadTokens": line.cache_read_tokens,
        "cacheWriteTokens": line.cache_write_tokens,
        "outputTokens": line.output_tokens,
        "costUsd": str(line.cost_usd),
        "savedByCacheUsd": str(line.saved_usd.quantize(Decimal("0.000001"))),
    }


@click.group(invoke_without_command=True)
@click.option("--since", default="24h", show_default=True, help="e.g. 24h, 7d, or an ISO time")
@click.option(
    "--by",
    "group",
    type=click.Choice(["user", "feature", "model", "day"]),
    default="feature",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def spend(ctx: click.Context, since: str, group: Any, as_json: bool) -> None:
    """What the jobs since SINCE spent: tokens, cache reads and writes, dollars, cache savings."""
    if ctx.invoked_subcommand is not None:
        return
    from vamu_tasks.cli import parse_when

    settings = Settings()
    db = Database.from_url(settings.effective_database_url, pool_size=1)
    try:
        lines = spend_by(db, group, parse_when(since))
    finally:
        db.close()
    total = SpendLine("total")
    for line in lines:
        total.add(line)
    if as_json:
        for line in [*lines, total]:
            click.echo(json.dumps(_as_dict(line)))
        return
    click.echo(
        f"{group:24}  {'jobs':>6}  {'input':>10}  {'cache read':>10}  {'cache write':>11}  "
        f"{'output':>9}  {'cost $':>10}  {'saved $':>9}"
    )
    for line in [*lines, total]:
        click.echo(
            f"{line.key[:24]:24}  {line.jobs:>6}  {line.input_tokens:>10}  "
            f"{line.cache_read_tokens:>10}  {line.cache_write_tokens:>11}  "
            f"{line.output_tokens:>9}  {_money(line.cost_usd):>10}  {_money(line.saved_usd):>9}"
        )


@spend.command("reset")
@click.option("--user", "user_id", required=True, help="The user whose day to clear.")
def spend_reset(user_id: str) -> None:
    """Clear a user's spend and reservations for today (UTC), so the budget starts again."""
    settings = Settings()
    client = redis_clients.app_redis(settings)
    try:
        limits = Limits(settings.budget_user_usd_per_day, settings.budget_provider_usd_per_day)
        RedisSpendBudget(client, limits, prefix=settings.budget_key_prefix).reset_user(user_id)
    finally:
        client.close()
    click.echo(f"today's spend of user {user_id!r} cleared")
