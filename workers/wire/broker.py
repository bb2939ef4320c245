"""kombu's Redis transport, with one client object per channel instead of one per command.

kombu's Redis channel builds a new `redis.Redis` around its connection pool for every publish, ack and
unacked-index update (`Channel.conn_or_acquire`); with redis-py 8 building one costs about 70 µs of Python,
and a job's path does it a dozen times across the web, the GPU worker and the safety worker. A client is a
thin, thread-safe handle on the pool (pipelines are separate objects), so one per channel serves every
thread. It is rebuilt whenever the channel gets a new pool (after a fork, or a reconnection). celeryconfig.py
selects these classes for `redis://`, `rediss://` and `sentinel://` broker URLs.

Redis answers some outages with an error reply, not a dropped connection: OOM at maxmemory with noeviction,
READONLY from a primary demoted by a failover, MASTERDOWN from a replica cut off from its primary. kombu files
them with every other ResponseError as channel errors, which Celery's consumer does not retry: at maxmemory
the worker died with "Unrecoverable error: OutOfMemoryError" (the unacked-index HSET after a BRPOP, or a
queue declare), and a GPU worker's restart costs a model load. Named here as connection errors, they make the
consumer reconnect with its usual backoff instead, as the web's BACKEND_ERRORS answer them 503 (issue 22).

They also keep a lost broker connection from killing the worker. When Redis goes away, Celery 5.7's consumer
collects the connection (kombu sets the transport's `client` to None) and then closes it; a channel whose
first close was cut short by its dead BRPOP connection is closed again then, drops its pool and, to give
back a message still unacknowledged (a late-ack task in flight), rebuilds the pool from `client.hostname`:
AttributeError, not a connection error, so nothing caught it and the worker died with "Unrecoverable error"
(2 of 3 Redis restarts under load, docs/benchmarks.md issue 22). Here that rebuild raises a connection error,
which kombu ignores; the message stays in the unacked hash and comes back after the visibility timeout (the
task, still running, finishes the job, so its redelivery finds it ended).
"""
from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from redis import exceptions as redis_errors

OUTAGE_REPLIES = (redis_errors.OutOfMemoryError, redis_errors.ReadOnlyError, redis_errors.MasterDownError)


class _OneSyncClient:
    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consumer's own client, created once per channel by kombu already
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool = self.pool  # type: ignore[attr-defined]
        cached = self.__dict__.get("_vla_sync_client")
        if cached is None or cached[0] is not pool:
            cached = (pool, super()._create_client(asynchronous=False))  # type: ignore[misc]
            self.__dict__["_vla_sync_client"] = cached
        return cached[1]

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:  # type: ignore[attr-defined]  collected: see the module docstring
            raise redis.exceptions.ConnectionError("the broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]


class Channel(_OneSyncClient, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel
    connection_errors = kombu_redis.Transport.connection_errors + OUTAGE_REPLIES


class SentinelChannel(_OneSyncClient, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
    connection_errors = kombu_redis.SentinelTransport.connection_errors + OUTAGE_REPLIES


def register() -> None:
    """Make the `redis://`, `rediss://` and `sentinel://` schemes name these classes in this process.

    `broker_transport` alone is not enough: a broker URL of several `;`-separated hosts (every sentinel) is a
    failover list to kombu, and on a reconnect after a failover `Connection.switch` re-reads the transport from
    the next URL's scheme, so the worker ran kombu's own class from then on (and died of the AttributeError
    above: a Sentinel failover killed the safety worker so). kombu resolves schemes through TRANSPORT_ALIASES.
    """
    from kombu.transport import TRANSPORT_ALIASES

    TRANSPORT_ALIASES.update({"redis": f"{__name__}:Transport", "rediss": f"{__name__}:Transport",
                              "sentinel": f"{__name__}:SentinelTransport"})
