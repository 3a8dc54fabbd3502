"""kombu's Redis transport, with one fix: a lost connection no longer kills the worker.

When the broker goes away, Celery's consumer closes its channel, and kombu's `Channel.close`
restores the messages it holds unacknowledged (retries waiting for their countdown, prefetched
tasks). By then the channel has dropped its connection pool and the connection its parameters,
so building a client for the restore fails with `AttributeError: 'NoneType' object has no
attribute 'hostname'`, which Celery treats as unrecoverable: the worker exits instead of
reconnecting (kombu 5.x; the same path as celery/kombu#970 and #582; docs/reliability.md,
bug E). A task still running through the reconnect (the threads pool cannot cancel it) later
acknowledges on that closed channel and crashes the worker the same way.

Nothing is lost by skipping either: the messages are still in Redis's `unacked` hash, and the
visibility-timeout sweep puts them back in their queues (within `VAMU_BROKER_VISIBILITY_
TIMEOUT_S`), where a copy of an ended job does nothing. Used for `redis://` brokers through
Celery's `broker_transport`, and in its Sentinel form (`SentinelTransport`, the same QoS on
kombu's Sentinel channel, with connections that find the new primary when they reconnect) for
brokers reached through Redis Sentinel, where a failover drops the connection the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

from vamu_tasks import redis_clients

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def _connection_gone(self) -> bool:
        transport = self.channel.connection
        return transport is None or transport.client is None

    def ack(self, delivery_tag: Any) -> None:
        # A task that ran through a reconnect (the threads pool cannot cancel it) acks on the
        # channel it came from, which is closed: kombu would crash the worker building a client
        # for it. Its entry stays in `unacked`; the copy the visibility timeout returns finds
        # the job ended and does nothing.
        if self._connection_gone():
            log.info("message %s: its broker connection closed; not acknowledged", delivery_tag)
            return
        super().ack(delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if self._connection_gone():
            log.info("message %s: its broker connection closed; not rejected", delivery_tag)
            return
        super().reject(delivery_tag, requeue=requeue)

    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)
        except Exception as exc:  # best effort at close: what is not put back stays in Redis
            delivered = self._delivered
            held = len(delivered) if delivered is not None else 0
            if delivered is not None:
                delivered.clear()
            log.warning(
                "broker connection lost before %d unacknowledged message(s) could be put back "
                "(%s); Redis keeps them and returns them after the visibility timeout",
                held,
                type(exc).__name__,
            )


class OneClient:
    """kombu's channel builds a new `redis.Redis` for every command it sends outside its
    consumer (each publish's LPUSH, each ack): about a fifth of the bridge's CPU per send
    (bench/send_path.py), nearly all of it the client's table of response callbacks. The client
    holds no connection of its own (each command takes one from the channel's pool and gives it
    back), so one client per pool behaves the same; a new pool (after a fork or a reconnect)
    gets a new client."""

    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool = self.pool  # type: ignore[attr-defined]
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = super()._create_client()  # type: ignore[misc]
        return client


class Channel(OneClient, kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(OneClient, kombu_redis.SentinelChannel):
    QoS = QoS
    # Connections that ask the Sentinels again when they reconnect (redis_clients.py says why).
    connection_class = redis_clients.SentinelConnection
    connection_class_ssl = redis_clients.SentinelSSLConnection


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


TRANSPORT = f"{__name__}:Transport"
SENTINEL_TRANSPORT = f"{__name__}:SentinelTransport"
