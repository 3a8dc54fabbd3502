"""Process settings from the environment: provider choice, transports, secrets."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import AliasChoices, SecretStr, ValidationError

from vamu_tasks.settings import Settings

SDK_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the developer's shell leaks in: only what a test sets counts."""
    for name in list(os.environ):
        if name.startswith("VAMU_") or name in SDK_VARIABLES:
            monkeypatch.delenv(name)


def settings() -> Settings:
    return Settings(_env_file=None)


def test_an_explicit_provider_wins_over_the_keys_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("VAMU_LLM_PROVIDER", "anthropic")

    assert settings().provider_name() == "anthropic"


def test_explicit_offline_needs_no_key_and_gives_no_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VAMU_LLM_PROVIDER", "offline")

    # filterwarnings = error: a warning here would fail the test.
    assert settings().provider_name() == "offline"


def test_an_unknown_provider_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAMU_LLM_PROVIDER", "llama")

    with pytest.raises(ValidationError, match="llm_provider"):
        settings()


def test_an_openai_key_selects_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")

    assert settings().provider_name() == "openai"


def test_an_anthropic_key_alone_selects_anthropic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")

    assert settings().provider_name() == "anthropic"


def test_with_both_keys_openai_is_preferred(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")

    assert settings().provider_name() == "openai"


def test_without_any_key_the_offline_provider_is_used_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="offline LLM provider"):
        name = settings().provider_name()

    assert name == "offline"


def test_empty_variables_are_ignored_as_if_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "VAMU_LLM_PROVIDER", "VAMU_NOTIFY", "VAMU_DATABASE_URL"):
        monkeypatch.setenv(name, "")

    s = settings()

    assert s.openai_api_key is None
    assert s.llm_provider is None
    assert s.notify == ["log"]
    assert s.database_url is None
    with pytest.warns(UserWarning):
        assert s.provider_name() == "offline"


def test_notify_defaults_to_the_log_transport() -> None:
    assert settings().notify == ["log"]


def test_notify_is_read_as_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAMU_NOTIFY", "socketio, webhook,log,")

    assert settings().notify == ["socketio", "webhook", "log"]


def test_an_unknown_transport_in_notify_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAMU_NOTIFY", "socketio,sms")

    with pytest.raises(ValidationError, match="notify"):
        settings()


def test_the_sdk_variables_configure_keys_and_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9999/v1")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9998")

    s = settings()

    assert s.openai_base_url == "http://127.0.0.1:9999/v1"
    assert s.anthropic_base_url == "http://127.0.0.1:9998"


def test_secrets_are_secret_strings_kept_out_of_repr_and_dumps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = {
        "OPENAI_API_KEY": "sk-openai-7d1e",
        "ANTHROPIC_API_KEY": "sk-ant-93fa",
        "VAMU_API_TOKEN": "nest-token-55aa",
        "VAMU_WEBHOOK_SECRET": "whsec-c0ffee",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)

    s = settings()

    fields = [s.openai_api_key, s.anthropic_api_key, s.api_token, s.webhook_secret]
    assert all(isinstance(field, SecretStr) for field in fields)
    assert [f.get_secret_value() for f in fields] == list(secrets.values())  # type: ignore[union-attr]
    shown = repr(s) + str(s) + s.model_dump_json() + repr(s.model_dump())
    for value in secrets.values():
        assert value not in shown


def test_env_example_names_every_setting_and_nothing_else() -> None:
    text = (Path(__file__).parents[2] / ".env.example").read_text()
    documented = set(re.findall(r"^# ((?:VAMU|OPENAI|ANTHROPIC)_[A-Z0-9_]+)=", text, re.M))
    expected = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = f"VAMU_{name.upper()}"
        expected.add(alias.choices[0] if isinstance(alias, AliasChoices) else env)

    assert documented == expected


def test_celery_task_events_are_off_unless_vamu_task_events_turns_them_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vamu_tasks.celery_config import celery_config

    monkeypatch.setenv("VAMU_LLM_PROVIDER", "offline")
    off = celery_config(Settings())
    monkeypatch.setenv("VAMU_TASK_EVENTS", "true")
    on = celery_config(Settings())

    events = ("worker_send_task_events", "task_send_sent_event")
    assert [off[key] for key in events] == [False, False]
    assert [on[key] for key in events] == [True, True]
