"""`vamu-tasks spend`: the bill from the job rows, by feature, user, model or day."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis

from tests.support.cli import vamu
from tests.support.services import temporary_database
from vamu_tasks.domain import NewJob, Spend, Usage
from vamu_tasks.llm.pricing import PRICES, cost_usd
from vamu_tasks.llm.spend_budget import Limits, RedisSpendBudget
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.store.repository import SqlAlchemyJobStore

pytestmark = pytest.mark.integration


@pytest.fixture
def db_url() -> Iterator[str]:
    with temporary_database("vamu_spend") as url:
        upgrade(url)
        yield url


def finished(store: SqlAlchemyJobStore, feature, user: str, model: str, usage: Usage) -> None:
    job, _ = store.create_job(NewJob(feature, user, {"userId": user}, "cli"))
    store.start_attempt(job.id)
    provider = "anthropic" if model.startswith("claude") else "openai"
    store.succeed(job.id, {}, Spend(provider, model, usage, cost_usd(model, usage)), [])


def test_spend_by_feature_sums_tokens_cache_parts_dollars_and_what_the_cache_saved(db_url):
    store = SqlAlchemyJobStore.from_url(db_url, transports=[])
    chat = Usage(10_000, 300, cache_read_tokens=8_000, cache_write_tokens=1_000)
    finished(store, "chatbot", "u-ada", "claude-sonnet-4-6", chat)
    finished(store, "chatbot", "u-bo", "claude-sonnet-4-6", chat)
    finished(store, "inspiration", "u-ada", "gpt-5-mini", Usage(2_000, 500))
    store.close()

    done = vamu({"VAMU_DATABASE_URL": db_url}, "spend", "--since", "1h", "--json")

    assert done.returncode == 0, done.stderr
    lines = {line["key"]: line for line in map(json.loads, done.stdout.splitlines())}
    assert set(lines) == {"chatbot", "inspiration", "total"}
    assert lines["chatbot"]["jobs"] == 2
    assert (lines["chatbot"]["cacheReadTokens"], lines["chatbot"]["cacheWriteTokens"]) == (
        16_000,
        2_000,
    )
    assert Decimal(lines["chatbot"]["costUsd"]) == 2 * cost_usd("claude-sonnet-4-6", chat)
    price = PRICES["claude-sonnet-4-6"]
    assert price.cache_write is not None
    saved = 2 * (
        8_000 * (price.input - price.cache_read) - 1_000 * (price.cache_write - price.input)
    )
    assert Decimal(lines["chatbot"]["savedByCacheUsd"]) == saved / 1_000_000
    assert Decimal(lines["inspiration"]["savedByCacheUsd"]) == 0
    assert lines["total"]["jobs"] == 3


def test_spend_by_user_prints_a_table_most_expensive_first(db_url):
    store = SqlAlchemyJobStore.from_url(db_url, transports=[])
    finished(store, "agent", "u-cheap", "gpt-5-nano", Usage(1_000, 100))
    finished(store, "agent", "u-dear", "claude-sonnet-4-6", Usage(50_000, 2_000))
    store.close()

    done = vamu({"VAMU_DATABASE_URL": db_url}, "spend", "--by", "user")

    assert done.returncode == 0, done.stderr
    rows = [line.split()[0] for line in done.stdout.splitlines()[1:]]
    assert rows == ["u-dear", "u-cheap", "total"]


def test_spend_reset_clears_a_users_day(app_redis_url):
    prefix = f"test-spend-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(app_redis_url)
    budget = RedisSpendBudget(client, Limits(Decimal("0.01")), prefix=prefix)
    client.incrby(f"{prefix}:user:u-ada:{budget._day()}:spent", 10_000)
    assert budget.over("u-ada") is not None

    done = vamu({"VAMU_REDIS_URL": app_redis_url, "VAMU_BUDGET_KEY_PREFIX": prefix,
                 "VAMU_BUDGET_USER_USD_PER_DAY": "0.01"}, "spend", "reset", "--user", "u-ada")

    assert done.returncode == 0, done.stderr
    assert budget.over("u-ada") is None
    client.close()
