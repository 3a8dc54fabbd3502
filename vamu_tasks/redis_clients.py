"""Every Redis client the processes open is built here: straight from its URL, or via Sentinel.

Without `VAMU_REDIS_SENTINELS` a client connects to the server its URL names, as before. With
it, a `redis://` (or `rediss://`) URL names only a database number, a user and a password: the
client asks the Sentinels which server is the primary of `VAMU_REDIS_SENTINEL_MASTER` and
connects there. It asks again whenever a connection (re)connects, and a connection that meets
a demoted primary (a READONLY reply) drops itself, so after a failover the next command (or its
retry) reaches the new primary without a restart. A `sentinel://` URL (kombu's form:
`sentinel://:password@host:26379/0;sentinel://host2:26379`) names its Sentinels itself.

The Celery broker is the one client not built here: kombu opens it from the URL that
`celery_broker_url` returns (kombu's own `sentinel://` transport when Sentinels are set).

Use `app_redis(settings)` for `VAMU_REDIS_URL` (Socket.IO emitter, chat streams, budgets, quotas,
leases) and `broker_redis(settings)` to read the broker's Redis (the reaper's inventory, the
queue-depth metric).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError
from redis.retry import Retry

from vamu_tasks.settings import Settings

SENTINEL_DEFAULT_PORT = 26379
# How long a Sentinel may take to answer "who is the primary?" before the next one is asked.
SENTINEL_SOCKET_TIMEOUT_S = 2.0
# A command that meets a failover is retried every 0.2 s to 1 s for about 8 s, each retry asking
# the Sentinels: a failover takes `down-after-milliseconds` plus a second or two. Longer, the
# caller sees a ConnectionError, as for any Redis outage.
FAILOVER_RETRIES = 10


def _failover_backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=1.0, base=0.1)


class SentinelConnection(redis.sentinel.SentinelManagedConnection):
    """redis-py's Sentinel connection, except that a reconnect asks the Sentinels again.

    redis-py 8.1 asks them only in `connect()`; a connection dropped under a command reconnects
    in `send_packed_command` to the address it had (redis/redis-py#3874), so a command retried
    after the primary died dials the dead primary until its retries run out: the bridge's BullMQ
    workers stopped taking jobs for about a minute (docs/reliability.md, bug F).
    """

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self._sock:
            self.connect()  # type: ignore[no-untyped-call]
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class SentinelSSLConnection(SentinelConnection, redis.SSLConnection):
    pass


class AsyncSentinelConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """The asyncio form of `SentinelConnection`."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        await super().send_packed_command(command, check_health)


class AsyncSentinelSSLConnection(AsyncSentinelConnection, redis.asyncio.SSLConnection):
    pass


@dataclass(frozen=True)
class SentinelTarget:
    """Where a URL's client finds its server when Sentinel is in use."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    username: str | None
    password: str | None = field(repr=False)
    ssl: bool = False

    def connection_kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"db": self.db}
        if self.username:
            out["username"] = self.username
        if self.password:
            out["password"] = self.password
        return out


def _db(path: str) -> int:
    text = path.lstrip("/")
    return int(text) if text else 0


def sentinel_target(url: str, settings: Settings) -> SentinelTarget | None:
    """The Sentinels, primary name, database and credentials of `url`, or None to connect direct."""
    parts = [part for part in url.split(";") if part.strip()]
    first = urlsplit(parts[0].strip())
    if first.scheme == "sentinel":
        sentinels = tuple(
            ((p.hostname or "localhost"), p.port or SENTINEL_DEFAULT_PORT)
            for p in (urlsplit(part.strip()) for part in parts)
        )
    elif settings.redis_sentinels and first.scheme in ("redis", "rediss"):
        sentinels = tuple(settings.redis_sentinels)
    else:
        return None
    return SentinelTarget(
        sentinels=sentinels,
        master=settings.redis_sentinel_master,
        db=_db(first.path),
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None,
        ssl=first.scheme == "rediss",
    )


def sync_client(url: str, settings: Settings, **options: Any) -> redis.Redis:
    """A client for `url` (options as for `redis.Redis`), through the Sentinels if set."""
    target = sentinel_target(url, settings)
    if target is None:
        return redis.Redis.from_url(url, **options)
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs={"socket_timeout": SENTINEL_SOCKET_TIMEOUT_S}
    )
    connection_class = SentinelSSLConnection if target.ssl else SentinelConnection
    options.setdefault("retry", Retry(_failover_backoff(), FAILOVER_RETRIES))
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.master, connection_class=connection_class, **target.connection_kwargs(), **options
    )
    return client


def async_client(url: str, settings: Settings, **options: Any) -> redis.asyncio.Redis:
    """The asyncio form of `sync_client`."""
    target = sentinel_target(url, settings)
    if target is None:
        return redis.asyncio.Redis.from_url(url, **options)
    sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs={"socket_timeout": SENTINEL_SOCKET_TIMEOUT_S}
    )
    connection_class = AsyncSentinelSSLConnection if target.ssl else AsyncSentinelConnection
    options.setdefault("retry", AsyncRetry(_failover_backoff(), FAILOVER_RETRIES))
    client: redis.asyncio.Redis = sentinel.master_for(
        target.master, connection_class=connection_class, **target.connection_kwargs(), **options
    )
    return client


def app_redis(settings: Settings, **options: Any) -> redis.Redis:
    """The client for `VAMU_REDIS_URL`: emitter, chat streams, budgets, quotas, leases."""
    return sync_client(settings.redis_url, settings, **options)


def broker_redis(settings: Settings, **options: Any) -> redis.Redis:
    """A client that reads the Redis broker's keys (not for Celery itself: kombu has its own)."""
    return sync_client(settings.effective_broker_url, settings, **options)


def bullmq_sentinel_client(settings: Settings) -> redis.asyncio.Redis | None:
    """A client for bullmq-py's `connection` option through the Sentinels; None without them.

    bullmq builds a plain `redis.asyncio.Redis` from connection options, which cannot follow a
    failover, but takes a client as it is. Settings as bullmq's own (`bridge.worker.
    bullmq_connection`): no socket timeout, which would cut its blocking wait short; retries
    for about a minute, as bullmq's own client keeps trying for minutes, but every 0.2 s to 1 s
    so it meets the new primary soon after the Sentinels name it (each retry asks them).
    """
    if sentinel_target(settings.redis_url, settings) is None:
        return None
    return async_client(
        settings.redis_url,
        settings,
        decode_responses=True,
        socket_timeout=None,
        socket_keepalive=True,
        retry=AsyncRetry(_failover_backoff(), 60),
        retry_on_error=[BusyLoadingError, ConnectionError, TimeoutError],
    )


def celery_broker_url(settings: Settings) -> str:
    """The broker URL Celery gets: `redis://` turned into kombu's `sentinel://` list if set.

    kombu takes the database, user and password from the first URL of the list and the primary's
    name from the `master_name` transport option (`celery_config.transport_options`).
    """
    url = settings.effective_broker_url
    if not settings.redis_sentinels or not url.startswith("redis://"):
        return url
    parts = urlsplit(url)
    auth = ""
    if parts.username or parts.password:
        user = quote(unquote(parts.username or ""), safe="")
        password = quote(unquote(parts.password or ""), safe="")
        auth = f"{user}:{password}@" if password else f"{user}@"
    path = f"/{_db(parts.path)}"
    return ";".join(
        f"sentinel://{auth}{_bracket(host)}:{port}{path}" for host, port in settings.redis_sentinels
    )


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def uses_sentinel(url: str) -> bool:
    """Whether a Celery broker URL goes through kombu's Sentinel transport."""
    return url.startswith("sentinel://")
