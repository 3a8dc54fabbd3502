"""The composition root: builds every adapter from `Settings` once per process and closes them.

Nothing here runs at import time. A worker process builds its container on first use (so a
prefork child never inherits its parent's sockets) and closes it when the worker shuts down.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import redis

from vamu_tasks import redis_clients
from vamu_tasks.batches.policy import BATCH_PROVIDERS
from vamu_tasks.broker_inventory import RedisBrokerInventory
from vamu_tasks.context.http import HttpNestApiClient
from vamu_tasks.context.static import StaticEventsClient, StaticUserContextClient
from vamu_tasks.domain import BatchAnswer, BatchRequest, BatchState
from vamu_tasks.errors import InternalError
from vamu_tasks.leases import LeaseKeeper
from vamu_tasks.llm.ratelimit import BudgetedLLM, RedisRateBudget
from vamu_tasks.llm.spend_budget import Limits, RedisSpendBudget, SpendBudgetedLLM
from vamu_tasks.metrics import InstrumentedLLM
from vamu_tasks.notify.chunks import LogChunkSink, RedisChunkSink
from vamu_tasks.notify.transports import LogTransport, SocketIOTransport, WebhookTransport
from vamu_tasks.otel import provider as otel
from vamu_tasks.ports import (
    AgentStepStore,
    BatchLLM,
    BrokerInventory,
    ChatStore,
    ChunkSink,
    EventsClient,
    LLMProvider,
    Transport,
    UserContextClient,
)
from vamu_tasks.settings import ProviderName, Settings
from vamu_tasks.store.agent import SqlAlchemyAgentStore
from vamu_tasks.store.batches import SqlAlchemyBatchStore
from vamu_tasks.store.chat import SqlAlchemyChatStore
from vamu_tasks.store.repository import Database, SqlAlchemyJobStore

if TYPE_CHECKING:
    from celery import Celery

    from vamu_tasks.llm.anthropic import AnthropicProvider
    from vamu_tasks.llm.openai import OpenAIProvider
    from vamu_tasks.sender import CelerySender

log = logging.getLogger(__name__)


OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
ANTHROPIC_DEFAULT_URL = "https://api.anthropic.com"


class ConfigurationError(InternalError):
    default_message = "The process configuration is incomplete; see the message for the setting."


# Inside `Container` the name `redis` is its field; annotations there use this alias.
RedisClient = redis.Redis


@dataclass
class Container:
    settings: Settings
    store: SqlAlchemyJobStore
    chats: ChatStore
    agent_steps: AgentStepStore
    context: UserContextClient
    events: EventsClient
    providers: dict[str, LLMProvider]
    transports: dict[str, Transport]
    chunk_sink: ChunkSink
    primary_provider: ProviderName
    redis: redis.Redis | None = None
    leases: LeaseKeeper | None = None
    budget: RedisRateBudget | None = None
    spend_budget: RedisSpendBudget | None = None
    broker_inventory: BrokerInventory | None = None
    batches: SqlAlchemyBatchStore | None = None
    _batch_api: BatchLLM | None = None
    _closers: list[Callable[[], Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sender: CelerySender | None = None

    def llm(self, name: str | None = None, model: str | None = None) -> LLMProvider:
        """The provider `name` (default the primary), optionally with another model."""
        provider = name or self.primary_provider
        key = f"{provider}:{model}" if model else provider
        with self._lock:
            if key not in self.providers:
                settings = self.settings
                if model and provider == "openai":
                    settings = settings.model_copy(update={"openai_model": model})
                elif model and provider == "anthropic":
                    settings = settings.model_copy(update={"anthropic_model": model})
                llm: LLMProvider = build_provider(settings, provider)  # type: ignore[arg-type]
                if otel.enabled():
                    from vamu_tasks.otel.genai import TracedLLM

                    # Innermost: the span is the vendor call, not a budget's wait before it.
                    llm = TracedLLM(llm, otel.tracer(), capture_content=otel.capture_content())
                if self.budget is not None:
                    llm = BudgetedLLM(llm, self.budget)
                if self.spend_budget is not None:
                    # Outside the rate budget: a call over the day's dollars takes no slot.
                    llm = SpendBudgetedLLM(llm, self.spend_budget)
                self.providers[key] = InstrumentedLLM(llm)
                _add_closer(self._closers, self.providers[key])
            return self.providers[key]

    def batch_api(self) -> BatchLLM | None:
        """The primary provider's batch API; None for the offline provider, which has none."""
        if self.primary_provider not in BATCH_PROVIDERS:
            return None
        with self._lock:
            if self._batch_api is None:
                require_key(self.settings, self.primary_provider)
                self._batch_api = LazyBatchLLM(self.settings, self.primary_provider, self._closers)
            return self._batch_api

    def task_sender(self, app: Celery) -> CelerySender:
        """This process's sender of Celery tasks for jobs (the reaper's re-sends, the batch
        tier's): one, holding a producer of Celery's pool per thread that sends, not a new one
        at every pass."""
        with self._lock:
            if self._sender is None:
                from vamu_tasks.sender import CelerySender

                self._sender = CelerySender(app)
            return self._sender

    def app_redis(self) -> RedisClient:
        """The app Redis (VAMU_REDIS_URL) this process shares: the transports' client, or one
        built the same way on first use (the housekeeping lease needs it on any notify worker)."""
        with self._lock:
            if self.redis is None:
                self.redis = redis_clients.app_redis(self.settings)
                self._closers.append(self.redis.close)
            return self.redis

    def close(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except Exception:  # closing must go on for the rest
                log.exception("error while closing %r", close)
        self._closers.clear()


def require_key(settings: Settings, name: ProviderName) -> None:
    """`ConfigurationError` when the provider `name` has no API key."""
    if name == "openai" and settings.openai_api_key is None:
        raise ConfigurationError(
            "The openai provider (VAMU_LLM_PROVIDER or VAMU_LLM_FALLBACK) needs OPENAI_API_KEY."
        )
    if name == "anthropic" and settings.anthropic_api_key is None:
        raise ConfigurationError(
            "The anthropic provider (VAMU_LLM_PROVIDER or VAMU_LLM_FALLBACK) needs "
            "ANTHROPIC_API_KEY."
        )


def build_provider(settings: Settings, name: ProviderName) -> LLMProvider:
    """The provider `name`. Each SDK is imported here, on first use, not with this module: the
    Anthropic SDK alone is ~45 MB of RSS, and a process loads only the one it calls (the notify
    worker and the bridge none; bench/memory.py)."""
    require_key(settings, name)
    common: dict[str, Any] = {
        "timeout_s": settings.llm_timeout_s,
        "max_retries": settings.llm_sdk_max_retries,
        "strict_validation": settings.llm_strict_validation,
    }
    # Explicit endpoints: an empty OPENAI_BASE_URL in the environment would otherwise be read
    # by the SDK itself and used as the URL.
    if name == "openai":
        from vamu_tasks.llm.openai import OpenAIProvider

        assert settings.openai_api_key is not None  # require_key
        return OpenAIProvider(
            api_key=settings.openai_api_key,
            model=settings.openai_model,
            base_url=settings.openai_base_url or OPENAI_DEFAULT_URL,
            **common,
        )
    if name == "anthropic":
        from vamu_tasks.llm.anthropic import AnthropicProvider

        assert settings.anthropic_api_key is not None  # require_key
        return AnthropicProvider(
            api_key=settings.anthropic_api_key,
            model=settings.anthropic_model,
            base_url=settings.anthropic_base_url or ANTHROPIC_DEFAULT_URL,
            cache_ttl=settings.prompt_cache_ttl,
            **common,
        )
    from vamu_tasks.llm.offline import OfflineProvider

    return OfflineProvider()


class LazyBatchLLM:
    """The primary provider's batch adapter, built (SDK imported) on its first vendor call.

    The housekeeping leader asks for the batch API on every pass (every
    VAMU_BATCH_POLL_INTERVAL_S), and most passes find nothing to send or poll: they need only
    the provider's name and model, which the settings give. Building the adapter then would
    load the SDK (~35 MB for OpenAI's) into every notify worker that leads, for nothing.
    """

    def __init__(
        self, settings: Settings, name: ProviderName, closers: list[Callable[[], Any]]
    ) -> None:
        self._settings = settings
        self._closers = closers
        self._adapter: BatchLLM | None = None
        self._lock = threading.Lock()
        self._provider = name
        self.name: str = name
        self.model: str = settings.openai_model if name == "openai" else settings.anthropic_model

    def _api(self) -> BatchLLM:
        with self._lock:
            if self._adapter is None:
                provider = build_provider(self._settings, self._provider)
                _add_closer(self._closers, provider)
                if self._provider == "openai":
                    from vamu_tasks.llm.openai_batch import OpenAIBatches

                    self._adapter = OpenAIBatches(cast("OpenAIProvider", provider))
                else:
                    from vamu_tasks.llm.anthropic_batch import AnthropicBatches

                    self._adapter = AnthropicBatches(cast("AnthropicProvider", provider))
            return self._adapter

    def submit(self, requests: Sequence[BatchRequest]) -> str:
        return self._api().submit(requests)

    def state(self, batch_id: str) -> BatchState:
        return self._api().state(batch_id)

    def answers(self, batch_id: str) -> Iterator[BatchAnswer]:
        return self._api().answers(batch_id)

    def cancel(self, batch_id: str) -> None:
        self._api().cancel(batch_id)


PROVIDER_MODULES: dict[str, str] = {
    "openai": "vamu_tasks.llm.openai",
    "anthropic": "vamu_tasks.llm.anthropic",
    "offline": "vamu_tasks.llm.offline",
}


def preload_provider(settings: Settings) -> None:
    """Import the primary provider's SDK now, so that the first job does not wait for it
    (build_provider would import it then); the other provider's SDK stays unloaded."""
    importlib.import_module(PROVIDER_MODULES[settings.provider_name()])


def build_api_clients(settings: Settings) -> tuple[UserContextClient, EventsClient]:
    """One HTTP client serves both ports; without an API, the bundled samples do."""
    if settings.api_base_url:
        client = HttpNestApiClient(
            base_url=settings.api_base_url,
            token=settings.api_token,
            timeout_s=settings.api_timeout_s,
            retries=settings.api_retries,
            trace_headers=otel.outgoing_headers if otel.enabled() else None,
        )
        if otel.enabled():
            from vamu_tasks.otel.ports import TracedApiClient

            traced = TracedApiClient(client, otel.tracer(), settings.api_base_url)
            return traced, traced
        return client, client
    log.warning("VAMU_API_BASE_URL is unset: using the bundled sample users and events.")
    return StaticUserContextClient(), StaticEventsClient()


def _add_closer(closers: list[Callable[[], Any]], obj: object) -> None:
    close = getattr(obj, "close", None)
    if callable(close):
        closers.append(close)


def _budgets(
    settings: Settings, limits: Limits, client: redis.Redis | None
) -> tuple[RedisRateBudget | None, RedisSpendBudget | None]:
    """The per-minute rate budget and the daily spend budget, each when configured."""
    if client is None:
        return None, None
    rate = None
    if settings.llm_rpm_limit or settings.llm_tpm_limit:
        rate = RedisRateBudget(
            client,
            requests_per_minute=settings.llm_rpm_limit,
            tokens_per_minute=settings.llm_tpm_limit,
        )
    spend = None
    if limits.any:
        spend = RedisSpendBudget(client, limits, prefix=settings.budget_key_prefix)
    return rate, spend


def build_container(settings: Settings) -> Container:
    closers: list[Callable[[], Any]] = []
    db = Database.from_url(settings.effective_database_url, pool_size=settings.database_pool_size)
    closers.append(db.close)
    store = SqlAlchemyJobStore(db, transports=settings.notify)
    if otel.enabled():
        from vamu_tasks.otel.ports import TracedJobStore

        store = TracedJobStore(db, transports=settings.notify, tracer=otel.tracer())
    context, events = build_api_clients(settings)
    _add_closer(closers, context)
    # Providers are built on first use, so a notify-only worker needs no LLM key.
    primary = settings.provider_name()
    providers: dict[str, LLMProvider] = {}
    redis_client: redis.Redis | None = None
    transports: dict[str, Transport] = {}
    for name in settings.notify:
        if name == "log":
            transports[name] = LogTransport()
        elif name == "socketio":
            if redis_client is None:
                redis_client = redis_clients.app_redis(settings)
                closers.append(redis_client.close)
            transports[name] = SocketIOTransport(redis_client, key=settings.socketio_key)
        elif name == "webhook":
            if not settings.webhook_url or settings.webhook_secret is None:
                raise ConfigurationError(
                    "VAMU_NOTIFY includes webhook: set VAMU_WEBHOOK_URL and VAMU_WEBHOOK_SECRET."
                )
            webhook = WebhookTransport(
                url=settings.webhook_url,
                secret=settings.webhook_secret,
                timeout_s=settings.webhook_timeout_s,
            )
            transports[name] = webhook
            closers.append(webhook.close)
    if otel.enabled():
        from vamu_tasks.otel.ports import TracedTransport

        transports = {name: TracedTransport(t, otel.tracer()) for name, t in transports.items()}
    leases = LeaseKeeper(
        store, lease_s=settings.job_lease_s, renew_every_s=settings.job_lease_s / 3
    )
    closers.append(leases.close)
    limits = Limits(settings.budget_user_usd_per_day, settings.budget_provider_usd_per_day)
    if redis_client is None and (settings.llm_rpm_limit or settings.llm_tpm_limit or limits.any):
        redis_client = redis_clients.app_redis(settings)
        closers.append(redis_client.close)
    budget, spend_budget = _budgets(settings, limits, redis_client)
    inventory = None
    if settings.broker_kind == "redis":
        # Only the reaper asks; the client connects on first use.
        inventory = RedisBrokerInventory(
            redis_clients.broker_redis(settings),
            key_prefix=settings.broker_key_prefix or "",
        )
        closers.append(inventory.close)
    chunk_sink: ChunkSink = LogChunkSink()
    if redis_client is not None and "socketio" in settings.notify:
        chunk_sink = RedisChunkSink(redis_client, key=settings.socketio_key)
    return Container(
        settings,
        store,
        SqlAlchemyChatStore(db),
        SqlAlchemyAgentStore(db, transports=settings.notify),
        context,
        events,
        providers,
        transports,
        chunk_sink,
        primary,
        redis_client,
        leases,
        budget,
        spend_budget,
        inventory,
        SqlAlchemyBatchStore(db, transports=settings.notify),
        None,
        closers,
    )


_lock = threading.Lock()
_container: Container | None = None


def get_container() -> Container:
    """This process's container, built on first use."""
    global _container
    with _lock:
        if _container is None:
            _container = build_container(Settings())
        return _container


def set_container(container: Container | None) -> None:
    """Install a container (tests, the demo) or forget the current one without closing it."""
    global _container
    with _lock:
        _container = container


def close_container() -> None:
    global _container
    with _lock:
        if _container is not None:
            _container.close()
            _container = None
