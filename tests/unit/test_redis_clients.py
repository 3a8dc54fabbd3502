"""Redis through Sentinel: which server each client asks for; what Celery's broker URL becomes."""

from __future__ import annotations

import os

import pytest
import redis
import redis.asyncio.sentinel
import redis.sentinel
from kombu import Connection
from kombu.transport import redis as kombu_redis
from pydantic import ValidationError

from vamu_tasks import redis_clients, redis_transport
from vamu_tasks.celery_config import celery_config
from vamu_tasks.settings import Settings

SENTINELS = "10.0.0.5:26379, sentinel-b:26380,10.0.0.7:26381"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VAMU_"):
            monkeypatch.delenv(name)


def settings(**env: str) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[arg-type]


def with_sentinels(**env: str) -> Settings:
    return settings(redis_sentinels=SENTINELS, **env)


def test_the_sentinel_list_is_read_as_host_and_port_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAMU_REDIS_SENTINELS", SENTINELS)

    s = settings()

    assert s.redis_sentinels == [("10.0.0.5", 26379), ("sentinel-b", 26380), ("10.0.0.7", 26381)]
    assert s.redis_sentinel_master == "mymaster"


def test_a_sentinel_that_is_not_host_and_port_is_refused_naming_the_variable() -> None:
    expected = r"VAMU_REDIS_SENTINELS: 'sentinel-b' is not host:port"
    with pytest.raises(ValidationError, match=expected):
        settings(redis_sentinels="10.0.0.5:26379,sentinel-b")


def test_without_sentinels_a_client_connects_to_the_server_its_url_names() -> None:
    client = redis_clients.app_redis(settings(redis_url="redis://:pw@cache.internal:6380/4"))

    kwargs = client.connection_pool.connection_kwargs
    assert not isinstance(client.connection_pool, redis.sentinel.SentinelConnectionPool)
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "cache.internal",
        6380,
        4,
        "pw",
    )


def test_with_sentinels_a_client_asks_them_for_the_primary_and_keeps_the_urls_db_and_password() -> (
    None
):
    s = with_sentinels(
        redis_url="redis://:p%40ss@ignored-host:6379/4", redis_sentinel_master="vamu-main"
    )

    client = redis_clients.app_redis(s, socket_timeout=2)

    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    # Connections that ask the Sentinels again when they reconnect (redis/redis-py#3874).
    assert pool.connection_class is redis_clients.SentinelConnection
    assert pool.service_name == "vamu-main"
    assert pool.is_master
    assert pool.connection_kwargs["db"] == 4
    assert pool.connection_kwargs["password"] == "p@ss"
    assert pool.connection_kwargs["socket_timeout"] == 2
    asked = [c.connection_pool.connection_kwargs for c in pool.sentinel_manager.sentinels]
    assert [(kw["host"], kw["port"]) for kw in asked] == [
        ("10.0.0.5", 26379),
        ("sentinel-b", 26380),
        ("10.0.0.7", 26381),
    ]
    # The Sentinels are asked without the data password (they have their own, or none).
    assert all(kw.get("password") is None for kw in asked)


def test_the_broker_reader_goes_through_the_sentinels_with_the_brokers_database() -> None:
    s = with_sentinels(broker_url="redis://:brokerpw@old-primary:6379/11")

    pool = redis_clients.broker_redis(s).connection_pool

    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (11, "brokerpw")


def test_the_bridges_bullmq_client_follows_the_sentinels_and_never_times_out_a_blocking_wait() -> (
    None
):
    assert redis_clients.bullmq_sentinel_client(settings()) is None

    client = redis_clients.bullmq_sentinel_client(with_sentinels(redis_url="redis://h/12"))

    assert client is not None
    pool = client.connection_pool
    assert isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert pool.connection_class is redis_clients.AsyncSentinelConnection
    assert pool.connection_kwargs["db"] == 12
    assert pool.connection_kwargs["socket_timeout"] is None
    assert pool.connection_kwargs["decode_responses"] is True


def test_a_redis_broker_becomes_kombus_sentinel_list_with_the_same_database_and_password() -> None:
    s = with_sentinels(
        broker_url="redis://:s3cr%2Ft@old-primary:6379/11", broker_key_prefix="vamu:"
    )

    config = celery_config(s)

    assert config["broker_url"] == (
        "sentinel://:s3cr%2Ft@10.0.0.5:26379/11;sentinel://:s3cr%2Ft@sentinel-b:26380/11;"
        "sentinel://:s3cr%2Ft@10.0.0.7:26381/11"
    )
    assert config["broker_transport"] == redis_transport.SENTINEL_TRANSPORT
    options = config["broker_transport_options"]
    assert options["master_name"] == "mymaster"
    assert options["visibility_timeout"] == 10
    assert options["global_keyprefix"] == "vamu:"
    # kombu reads the database and the password from the first URL and every Sentinel from
    # the list; no connection is opened here.
    connection = Connection(config["broker_url"], transport=config["broker_transport"])
    assert (connection.password, connection.virtual_host) == ("s3cr/t", "11")
    assert [u.split("@", 1)[1] for u in connection.alt] == [
        "10.0.0.5:26379/11",
        "sentinel-b:26380/11",
        "10.0.0.7:26381/11",
    ]


def test_without_sentinels_the_broker_url_and_transport_stay_as_they_were() -> None:
    config = celery_config(settings(broker_url="redis://127.0.0.1:6379/11"))

    assert config["broker_url"] == "redis://127.0.0.1:6379/11"
    assert config["broker_transport"] == redis_transport.TRANSPORT
    assert "master_name" not in config["broker_transport_options"]


def test_a_sentinel_broker_counts_as_redis_for_the_lost_message_check_and_queue_depths() -> None:
    translated = with_sentinels(broker_url="redis://127.0.0.1:6379/11")
    given = settings(broker_url="sentinel://:pw@10.0.0.5:26379/3;sentinel://10.0.0.6:26379/3")

    assert translated.broker_kind == "redis"
    assert given.broker_kind == "redis"
    config = celery_config(given)
    assert config["broker_transport"] == redis_transport.SENTINEL_TRANSPORT
    assert config["broker_transport_options"]["master_name"] == "mymaster"
    pool = redis_clients.broker_redis(given).connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (3, "pw")
    assert len(pool.sentinel_manager.sentinels) == 2


def test_a_tls_broker_cannot_go_through_sentinel_and_says_so() -> None:
    with pytest.raises(ValidationError, match="VAMU_REDIS_SENTINELS cannot take a rediss://"):
        with_sentinels(broker_url="rediss://old-primary:6380/0")


def test_the_sentinel_transport_keeps_the_fix_for_a_lost_connection() -> None:
    channel = redis_transport.SentinelTransport.Channel

    assert issubclass(redis_transport.SentinelTransport, kombu_redis.SentinelTransport)
    assert issubclass(channel, kombu_redis.SentinelChannel)
    assert channel.QoS is redis_transport.QoS
    assert channel.connection_class is redis_clients.SentinelConnection


def test_a_tls_url_reaches_the_primary_over_tls_through_the_sentinels() -> None:
    client = redis_clients.app_redis(with_sentinels(redis_url="rediss://:pw@ignored:6380/2"))

    assert client.connection_pool.connection_class is redis_clients.SentinelSSLConnection
    assert issubclass(redis_clients.SentinelSSLConnection, redis.SSLConnection)
