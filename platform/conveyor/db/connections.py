"""Redis connections, made in one place: every Conveyor process reaches Redis through
these factories, with the deployment's timeouts; :func:`broker_url` and
:func:`broker_transport_options` tell Celery the same.

With ``[redis] sentinels``, each client is one that redis-py's Sentinel support manages:
a new connection asks the sentinels for the current primary of ``master_name``, and a
connection to a primary that went away (or was demoted: Redis closes its clients' links
then) is replaced by one to the primary the sentinels elected."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import quote

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from redis.exceptions import RedisError

from conveyor.errors import BrokerUnavailableError, RedisCommandError
from conveyor.settings import Settings

HEALTH_CHECK_INTERVAL = 30


# Redis' answers that say it cannot serve now (busy, loading, a replica, out of memory, a
# failover under way): the caller may try again. Any other error reply is a fault.
_UNAVAILABLE = ("BUSY", "LOADING", "MASTERDOWN", "READONLY", "OOM", "NOREPLICAS", "TRYAGAIN")
_UNAVAILABLE_ERRORS = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
    redis.exceptions.NoPermissionError,
)


@contextlib.contextmanager
def broker_errors() -> Iterator[None]:
    """Turn any failure to talk to Redis into :class:`BrokerUnavailableError`, and an
    error reply that is no outage (a script's error, a wrong command) into
    :class:`RedisCommandError`: never reported as an unreachable Redis."""
    try:
        yield
    except redis.ResponseError as exc:
        code = getattr(exc, "status_code", None) or str(exc).partition(" ")[0]
        if code in _UNAVAILABLE or isinstance(exc, _UNAVAILABLE_ERRORS):
            raise BrokerUnavailableError(f"Redis cannot serve now: {exc}") from exc
        raise RedisCommandError(f"Redis refused a command: {exc}") from exc
    except (RedisError, OSError) as exc:
        raise BrokerUnavailableError(f"Redis is unreachable: {exc}") from exc


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """How to reach the sentinels themselves."""
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": settings.redis.connect_timeout,
        "socket_timeout": settings.redis.socket_timeout,
    }
    if settings.redis.sentinel_password:
        kwargs["password"] = settings.redis.sentinel_password
    return kwargs


def _primary_kwargs(settings: Settings) -> dict[str, Any]:
    """What a connection to the primary needs besides its address."""
    kwargs: dict[str, Any] = {"db": settings.redis.db, "decode_responses": True}
    if settings.redis.password:
        kwargs["password"] = settings.redis.password
    if settings.redis.username:
        kwargs["username"] = settings.redis.username
    return kwargs


def sync_client(settings: Settings, *, retry_on_timeout: bool = False) -> redis.Redis:
    """A client for processes without an event loop (workers, the supervisor)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis.connect_timeout,
        "socket_timeout": settings.redis.socket_timeout,
        "retry_on_timeout": retry_on_timeout,
    }
    if settings.redis.sentinels:
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8
            settings.redis.sentinel_addresses(), sentinel_kwargs=_sentinel_kwargs(settings)
        )
        client = sentinel.master_for(  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8
            settings.redis.master_name, **options, **_primary_kwargs(settings)
        )
        return cast(redis.Redis, client)
    return redis.Redis.from_url(settings.redis.url, decode_responses=True, **options)


class _BlockingSentinelPool(aiosentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The sentinels' current primary, with the blocking pool's wait for a free connection."""


def _async_sentinel(settings: Settings) -> aiosentinel.Sentinel:
    return aiosentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8
        settings.redis.sentinel_addresses(), sentinel_kwargs=_sentinel_kwargs(settings)
    )


def pooled_client(settings: Settings) -> aioredis.Redis:
    """The API's shared client. A blocking pool: past ``max_connections`` a request waits
    for a connection, where the default pool raises MaxConnectionsError (a
    ConnectionError: a false 503)."""
    options: dict[str, Any] = {
        "max_connections": settings.redis.max_connections,
        "timeout": settings.redis.socket_timeout,
        "socket_connect_timeout": settings.redis.connect_timeout,
        "socket_timeout": settings.redis.socket_timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
    }
    if settings.redis.sentinels:
        client = _async_sentinel(settings).master_for(
            settings.redis.master_name,
            connection_pool_class=_BlockingSentinelPool,
            **options,
            **_primary_kwargs(settings),
        )
        return cast(aioredis.Redis, client)
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis.url, decode_responses=True, **options
    )
    return aioredis.Redis(connection_pool=pool)


def listener_client(settings: Settings) -> aioredis.Redis:
    """A connection with no read timeout, for a subscription that idles until an event."""
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis.connect_timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
    }
    if settings.redis.sentinels:
        client = _async_sentinel(settings).master_for(
            settings.redis.master_name, **options, **_primary_kwargs(settings)
        )
        return cast(aioredis.Redis, client)
    return aioredis.Redis.from_url(settings.redis.url, decode_responses=True, **options)


def broker_url(settings: Settings) -> str:
    """Celery's broker: the URL, or kombu's ``sentinel://`` list (one per sentinel, with
    the primary's password; the master's name is a transport option)."""
    if not settings.redis.sentinels:
        return settings.redis.url
    user = quote(settings.redis.username, safe="")
    secret = f"{user}:{quote(settings.redis.password, safe='')}@" if settings.redis.password else ""
    return ";".join(
        f"sentinel://{secret}{f'[{host}]' if ':' in host else host}:{port}/{settings.redis.db}"
        for host, port in settings.redis.sentinel_addresses()
    )


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """What kombu's Sentinel transport needs besides :func:`broker_url`."""
    if not settings.redis.sentinels:
        return {}
    return {
        "master_name": settings.redis.master_name,
        "sentinel_kwargs": _sentinel_kwargs(settings),
    }
