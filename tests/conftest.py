"""Fixtures shared by every test layer: databases, Redis, and the wire fakes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.services import (
    REDIS_APP_DB,
    REDIS_BROKER_DB,
    flush_redis,
    redis_url,
    temporary_database,
)
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.testing.fake_api import FakeNestApi
from vamu_tasks.testing.fake_llm import FakeLLMServer

LLM_KEY = "sk-test-llm-key"
API_TOKEN = "test-api-token"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database for the whole session."""
    with temporary_database() as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    flush_redis(REDIS_BROKER_DB)
    yield redis_url(REDIS_BROKER_DB)
    flush_redis(REDIS_BROKER_DB)


@pytest.fixture(scope="session")
def app_redis_url() -> Iterator[str]:
    flush_redis(REDIS_APP_DB)
    yield redis_url(REDIS_APP_DB)
    flush_redis(REDIS_APP_DB)


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key=LLM_KEY) as server:
        yield server


@pytest.fixture
def fake_llm(fake_llm_server: FakeLLMServer) -> Iterator[FakeLLMServer]:
    """The session's fake LLM server, with an empty script and request log for this test."""
    fake_llm_server.reset()
    fake_llm_server.latency = 0.0
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture(scope="session")
def fake_api_server() -> Iterator[FakeNestApi]:
    with FakeNestApi(token=API_TOKEN) as server:
        yield server


@pytest.fixture
def fake_api(fake_api_server: FakeNestApi) -> Iterator[FakeNestApi]:
    fake_api_server.reset()
    yield fake_api_server
    fake_api_server.reset()
