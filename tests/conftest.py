"""Fixtures shared by every test layer: databases, Redis, and the wire fakes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from celery import Celery

from tests.support.services import (
    REDIS_APP_DB,
    REDIS_BROKER_DB,
    delete_keys,
    free_port,
    redis_url,
    temporary_database,
)
from tests.support.webhook import WebhookReceiver
from tests.support.worker import WorkerProcess, sender_app
from vamu_tasks.domain import Feature
from vamu_tasks.sender import CelerySender
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.store.repository import SqlAlchemyJobStore
from vamu_tasks.submit import submit_job
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
    # Shared with other sessions: each stack uses its own key prefix and deletes its keys.
    yield redis_url(REDIS_BROKER_DB)


@pytest.fixture(scope="session")
def app_redis_url() -> Iterator[str]:
    # Shared too: Socket.IO keys, BullMQ queues and stream keys are unique per session.
    yield redis_url(REDIS_APP_DB)


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


WEBHOOK_SECRET = "whsec-test-canary-5f1c"


@dataclass
class Stack:
    """A running worker wired to real PostgreSQL and Redis and to the wire fakes."""

    env: dict[str, str]
    store: SqlAlchemyJobStore
    sender: CelerySender
    app: Celery
    worker: WorkerProcess
    webhook: WebhookReceiver
    llm: FakeLLMServer
    api: FakeNestApi
    socketio_key: str
    app_redis_url: str

    def submit(self, data: dict[str, Any], feature: Feature = "inspiration",
               source_ref: str | None = None) -> uuid.UUID:
        job, _ = submit_job(self.store, self.sender, feature, data, source="cli",
                            source_ref=source_ref)
        return job.id


@pytest.fixture(scope="session")
def stack(
    pg_url: str,
    broker_url: str,
    app_redis_url: str,
    fake_llm_server: FakeLLMServer,
    fake_api_server: FakeNestApi,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("stack")
    socketio_key = f"vamu-test-{uuid.uuid4().hex[:8]}"
    # Its own broker keys: test sessions running side by side must not take each other's tasks.
    broker_prefix = f"{socketio_key}:"
    with WebhookReceiver(WEBHOOK_SECRET) as webhook:
        env = {
            "VAMU_DATA_DIR": str(data_dir),
            "VAMU_BROKER_URL": broker_url,
            "VAMU_BROKER_KEY_PREFIX": broker_prefix,
            "VAMU_DATABASE_URL": pg_url,
            "VAMU_REDIS_URL": app_redis_url,
            "VAMU_API_BASE_URL": fake_api_server.url,
            "VAMU_API_TOKEN": API_TOKEN,
            "VAMU_API_TIMEOUT_S": "1",
            "VAMU_API_RETRIES": "1",
            "VAMU_LLM_PROVIDER": "openai",
            "VAMU_LLM_FALLBACK": "anthropic",
            "VAMU_OPENAI_MODEL": "gpt-5-mini",
            "VAMU_ANTHROPIC_MODEL": "claude-sonnet-4-6",
            "OPENAI_API_KEY": LLM_KEY,
            "OPENAI_BASE_URL": fake_llm_server.openai_base_url,
            "ANTHROPIC_API_KEY": LLM_KEY,
            "ANTHROPIC_BASE_URL": fake_llm_server.anthropic_base_url,
            "VAMU_LLM_STRICT_VALIDATION": "true",
            "VAMU_LLM_TIMEOUT_S": "1.5",
            "VAMU_JOB_MAX_RETRIES": "2",
            "VAMU_RETRY_BACKOFF_BASE_S": "0.05",
            "VAMU_RETRY_BACKOFF_MAX_S": "3",
            "VAMU_NOTIFY": "socketio,webhook,log",
            "VAMU_SOCKETIO_KEY": socketio_key,
            "VAMU_WEBHOOK_URL": webhook.url,
            "VAMU_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "VAMU_OUTBOX_STALE_AFTER_S": "1",
            "VAMU_LLM_CONCURRENCY": "8",
            "VAMU_AGENT_MAX_STEPS": "6",
            # The agent's prompts cross the vendors' cache minimum (its tools alone are ~1,100
            # tokens), so the fake counts them as sent: six steps need room.
            "VAMU_AGENT_MAX_TOKENS": "50000",
            "VAMU_AGENT_MAX_SECONDS": "5",
            "VAMU_METRICS_PORT": str(free_port()),
        }
        app = sender_app(env)
        store = SqlAlchemyJobStore.from_url(pg_url, transports=["socketio", "webhook", "log"])
        worker = WorkerProcess(env, queues="inspiration,chatbot,agent,notify",
                               log_path=data_dir / "worker.log")
        with worker:
            yield Stack(env, store, CelerySender(app), app, worker, webhook, fake_llm_server,
                        fake_api_server, socketio_key, app_redis_url)
        store.close()
        app.close()
        delete_keys(REDIS_BROKER_DB, f"{broker_prefix}*")
