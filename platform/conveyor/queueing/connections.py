"""Redis connections, made in one place: every Conveyor process reaches Redis through
these factories (Celery's own connections aside), with the deployment's timeouts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from conveyor.errors import BrokerUnavailableError
from conveyor.settings import Settings

HEALTH_CHECK_INTERVAL = 30


@contextlib.contextmanager
def broker_errors() -> Iterator[None]:
    """Turn any failure to talk to Redis into :class:`BrokerUnavailableError`."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise BrokerUnavailableError(f"Redis is unreachable: {exc}") from exc


def sync_client(settings: Settings, *, retry_on_timeout: bool = False) -> redis.Redis:
    """A client for processes without an event loop (workers, the supervisor)."""
    return redis.Redis.from_url(
        settings.redis.url,
        decode_responses=True,
        socket_connect_timeout=settings.redis.connect_timeout,
        socket_timeout=settings.redis.socket_timeout,
        retry_on_timeout=retry_on_timeout,
    )


def pooled_client(settings: Settings) -> aioredis.Redis:
    """The API's shared client. A blocking pool: past ``max_connections`` a request waits
    for a connection, where the default pool raises MaxConnectionsError (a
    ConnectionError: a false 503)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis.url,
        max_connections=settings.redis.max_connections,
        timeout=settings.redis.socket_timeout,
        decode_responses=True,
        socket_connect_timeout=settings.redis.connect_timeout,
        socket_timeout=settings.redis.socket_timeout,
        health_check_interval=HEALTH_CHECK_INTERVAL,
    )
    return aioredis.Redis(connection_pool=pool)


def listener_client(settings: Settings) -> aioredis.Redis:
    """A connection with no read timeout, for a subscription that idles until an event."""
    return aioredis.Redis.from_url(
        settings.redis.url,
        decode_responses=True,
        socket_connect_timeout=settings.redis.connect_timeout,
        health_check_interval=HEALTH_CHECK_INTERVAL,
    )
