"""Process settings from `VAMU_*` variables, the SDKs' own variables and a `.env` file."""

from __future__ import annotations

import warnings
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ProviderName = Literal["openai", "anthropic", "offline"]
TransportName = Literal["socketio", "webhook", "log"]

DEFAULT_DATA_DIR = Path(".vamu")


def _log_only() -> list[TransportName]:
    return ["log"]


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"VAMU_REDIS_SENTINELS: {text!r} is not host:port (e.g. 10.0.0.5:26379)")
    return host, int(port)


class Settings(BaseSettings):
    """Everything a process needs; read once per process by the composition root."""

    model_config = SettingsConfigDict(
        env_prefix="VAMU_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
    )

    data_dir: Path = DEFAULT_DATA_DIR
    broker_url: str | None = None
    # Prefix for every key the Redis broker writes, to share one Redis DB between deployments.
    broker_key_prefix: str | None = None
    broker_quorum_queues: bool = True  # on RabbitMQ
    # Redis broker: a message a dead worker held goes back to its queue after this long. Short,
    # because the job lease (not this timeout) keeps a long-running job from running twice.
    broker_visibility_timeout_s: int = 10
    database_url: str | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Redis Sentinel: when set, every redis:// URL above (broker included) names a database and
    # credentials, and the server is the primary these Sentinels name (vamu_tasks/redis_clients).
    redis_sentinels: Annotated[list[tuple[str, int]] | None, NoDecode] = None
    redis_sentinel_master: str = "mymaster"
    # Connections per process (and as many again on overflow); jobs hold one only briefly.
    database_pool_size: int = 10

    api_base_url: str | None = None
    api_token: SecretStr | None = None
    api_timeout_s: float = 5.0
    api_retries: int = 2

    llm_provider: ProviderName | None = None
    llm_fallback: ProviderName | None = None
    openai_model: str = "gpt-5-mini"
    anthropic_model: str = "claude-sonnet-4-6"
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "VAMU_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "VAMU_OPENAI_BASE_URL")
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_API_KEY", "VAMU_ANTHROPIC_API_KEY"),
    )
    anthropic_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "VAMU_ANTHROPIC_BASE_URL"),
    )
    llm_timeout_s: float = 60.0
    # The SDKs would sleep on Retry-After inside a worker thread; Celery owns retries instead.
    llm_sdk_max_retries: int = 0
    llm_strict_validation: bool = False
    llm_max_output_tokens: int = 2048
    # How long Anthropic keeps a cached prompt prefix: "5m" (writes cost 1.25x the input price)
    # or "1h" (2x), refreshed on each hit. OpenAI's cache needs no setting.
    prompt_cache_ttl: Literal["5m", "1h"] = "5m"
    # Daily spend budgets in US dollars (UTC days), shared through VAMU_REDIS_URL: each call
    # first reserves its worst case. Unset: no budget.
    budget_user_usd_per_day: Decimal | None = Field(default=None, gt=0)
    budget_provider_usd_per_day: Decimal | None = Field(default=None, gt=0)
    budget_key_prefix: str = "vamu:spend"
    # Shared by all processes through Redis (VAMU_REDIS_URL); set below the provider's limits.
    llm_rpm_limit: int | None = None
    llm_tpm_limit: int | None = None
    chat_history_budget_tokens: int = 3000
    agent_max_steps: int = 8
    agent_max_tokens: int = 20_000
    agent_max_seconds: float = 120.0
    agent_max_tool_result_chars: int = 4000
    chat_max_output_tokens: int = 1024

    job_max_retries: int = 5
    retry_backoff_base_s: float = 2.0
    retry_backoff_max_s: float = 120.0
    task_soft_time_limit_s: int = 240
    # A running job's lease, renewed every third of it; the reaper re-sends orphans after it.
    job_lease_s: float = 10.0
    reaper_interval_s: float = 2.0
    # A queued job, this old, whose message a Redis broker no longer holds is sent again.
    lost_message_after_s: float = 5.0
    # A job queued this long without starting may have lost its message (a broker that cannot
    # be asked, or a backlog too long to read): send it again.
    stale_queued_s: float = 120.0
    task_time_limit_s: int = 300
    # Housekeeping (the reaper, the outbox sweep): every notify worker contends for one lease in
    # VAMU_REDIS_URL and only its holder runs them. A dead holder's lease runs out after this
    # long; the others try every third of it, so one takes over within 4/3 of it.
    housekeeping_lease_s: float = 3.0
    # The lease key is "<VAMU_BROKER_KEY_PREFIX><this>:leader", one per deployment.
    housekeeping_key: str = "vamu:housekeeping"

    notify: Annotated[list[TransportName], NoDecode] = Field(default_factory=_log_only)
    socketio_key: str = "socket.io"
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_timeout_s: float = 5.0
    notify_max_retries: int = 8
    # Send a job's socketio and log notifications from the worker that committed it; webhooks,
    # failed sends and agent steps go through the notify queue.
    notify_inline: bool = True
    outbox_sweep_interval_s: float = 15.0
    outbox_stale_after_s: float = 30.0
    # A notification still undelivered this long after its job ended is given up (kept, with
    # the reason, but no longer sent).
    outbox_give_up_after_s: float = 86_400.0

    # The batch tier (jobs with `deliverBy`): a batch is sent when it holds this many jobs or
    # its oldest has waited this long; sent batches are polled this often; a job whose
    # `deliverBy` is this near runs synchronously instead (its batch result is then discarded).
    batch_max_jobs: int = Field(default=1000, ge=1, le=50_000)
    batch_max_wait_s: float = 300.0
    batch_poll_interval_s: float = 60.0
    batch_sync_margin_s: float = 900.0

    flower_user: str = "admin"
    flower_password: SecretStr | None = None
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555
    # Celery task events (task-sent, -received, -started, -succeeded) from the start. Off, a
    # worker sends them only once Flower (or `celery control enable_events`) asks: four
    # messages a job that nobody reads otherwise (docs/performance.md).
    task_events: bool = False
    # Only for a laptop: Flower without a password, and then only on 127.0.0.1.
    flower_insecure_local: bool = False

    metrics_port: int | None = None  # each worker/bridge process serves /metrics on this port
    # Loopback by default; a deployment opens it to its private network on purpose.
    metrics_address: str = "127.0.0.1"

    # Enough threads for 200 LLM calls in flight per process (issue 16's 5 s x 200 goal); an idle
    # thread costs little memory (docs/performance.md, "Memory").
    llm_concurrency: int = 200
    notify_concurrency: int = 20

    bullmq_queue: str = "vamu-ai"
    bullmq_sync_queue: str = "vamu-ai-sync"
    bullmq_prefix: str = "bull"
    # A few slots are enough (the work runs in a thread pool): each idle slot of a bullmq-python
    # Worker polls with a Lua script whenever a job arrives, ~90 Redis commands per job at 50.
    bridge_concurrency: int = 4
    # A sync job holds its slot until its result is ready.
    bridge_sync_concurrency: int = 16
    bridge_sync_timeout_s: float = 30.0
    bridge_lock_duration_ms: int = 30_000
    bridge_stalled_interval_ms: int = 30_000
    bridge_max_stalled_count: int = 1
    quota_jobs_per_user_per_hour: int = 120
    # Redis key prefix of the quota counters (in VAMU_REDIS_URL), shared by every bridge.
    quota_key_prefix: str = "vamu:quota"

    @field_validator("notify", mode="before")
    @classmethod
    def _split_notify(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        if isinstance(value, str):
            return [_host_port(part.strip()) for part in value.split(",") if part.strip()] or None
        return value

    @model_validator(mode="after")
    def _sentinel_broker_is_plain_redis(self) -> Settings:
        if self.redis_sentinels and self.effective_broker_url.startswith("rediss://"):
            raise ValueError(
                "VAMU_REDIS_SENTINELS cannot take a rediss:// VAMU_BROKER_URL (kombu's Sentinel "
                "transport gets TLS from broker_use_ssl, not the URL); use redis:// or a "
                "broker without Sentinel"
            )
        return self

    def secret_values(self) -> list[str]:
        """Every secret this process holds, for output filters that must never echo one."""
        secrets = [
            self.api_token,
            self.openai_api_key,
            self.anthropic_api_key,
            self.webhook_secret,
            self.flower_password,
        ]
        return [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def is_embedded_broker(self) -> bool:
        return self.effective_broker_url.startswith("filesystem://")

    @property
    def broker_kind(self) -> Literal["amqp", "redis", "filesystem", "other"]:
        url = self.effective_broker_url
        if url.startswith(("amqp://", "amqps://", "pyamqp://")):
            return "amqp"
        if url.startswith(("redis://", "rediss://", "sentinel://")):
            return "redis"
        return "filesystem" if self.is_embedded_broker else "other"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'vamu.db').resolve()}"

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    def provider_name(self) -> ProviderName:
        """The configured provider, else the first one with a key, else offline (with a warning)."""
        if self.llm_provider:
            return self.llm_provider
        if self.openai_api_key:
            return "openai"
        if self.anthropic_api_key:
            return "anthropic"
        warnings.warn(
            "No OPENAI_API_KEY or ANTHROPIC_API_KEY set: using the offline LLM provider, "
            "which returns deterministic placeholder text. Set VAMU_LLM_PROVIDER to silence this.",
            UserWarning,
            stacklevel=2,
        )
        return "offline"
