"""`vamu-tasks dev` gives every process one environment, and each its own metrics port."""

from __future__ import annotations

import pytest

from vamu_tasks.dev import (
    SPECS,
    DevError,
    DevOptions,
    ensure_database,
    process_environment,
    shared_environment,
)
from vamu_tasks.settings import Settings


def test_the_defaults_are_the_local_servers_with_compose_s_redis_databases_and_socketio_on():
    env = shared_environment(DevOptions())

    assert env["VAMU_DATABASE_URL"] == "postgresql+psycopg://postgres@127.0.0.1:5432/vamu_dev"
    assert env["VAMU_BROKER_URL"] == "redis://127.0.0.1:6379/0"
    assert env["VAMU_REDIS_URL"] == "redis://127.0.0.1:6379/1"  # as VAMU_REDIS_URL in compose
    assert env["VAMU_NOTIFY"] == "socketio,log"
    assert env["VAMU_FLOWER_INSECURE_LOCAL"] == "true"


def test_the_environment_is_what_the_settings_read(monkeypatch):
    for name, value in shared_environment(DevOptions(app_db=12, broker_db=11)).items():
        monkeypatch.setenv(name, value)

    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert settings.notify == ["socketio", "log"]
    assert settings.redis_url == "redis://127.0.0.1:6379/12"
    assert settings.broker_kind == "redis"
    assert settings.flower_insecure_local is True


def test_each_process_with_metrics_gets_a_port_of_its_own():
    options = DevOptions(metrics_base=9100)

    ports = {spec.name: process_environment(options, spec)["VAMU_METRICS_PORT"] for spec in SPECS}

    assert ports == {"llm": "9101", "notify": "9102", "bridge": "9103", "flower": ""}


def test_without_metrics_no_process_serves_them_whatever_env_says():
    options = DevOptions(metrics_base=None)

    assert {process_environment(options, spec)["VAMU_METRICS_PORT"] for spec in SPECS} == {""}


def test_a_database_other_than_postgresql_is_refused_before_anything_starts():
    with pytest.raises(DevError, match="runs on PostgreSQL"):
        ensure_database("sqlite:///vamu.db")
