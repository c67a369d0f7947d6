"""kombu's Redis transports, with one fault of theirs fixed.

When a worker loses Redis, Celery closes the connection and kombu's channel, on closing,
restores the messages it holds, through a client it builds from the connection, which is
already released by then: ``_connparams`` reads ``None.hostname`` and raises
AttributeError, which Celery does not count as a connection error, so the worker stops
("Unrecoverable error") instead of reconnecting (seen in tests/faults/test_map_faults.py
with Redis restarted mid-job; kombu#970 reports the same path). Here that case raises
redis' ConnectionError, which Celery ignores while it reconnects; the messages stay in
kombu's unacked set and are restored after the visibility timeout, as for a lost worker.
:func:`register` makes kombu use these for ``redis://`` and ``sentinel://`` URLs.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

CLOSED = (
    "the broker connection was released; its messages are restored after the visibility timeout"
)


class _Released:
    """A mixin: no client is built from a released connection."""

    connection: Any

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError(CLOSED)
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[misc]
        return params


class Channel(_Released, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(_Released, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


def register() -> None:
    """Make kombu resolve ``redis://``, ``rediss://`` and ``sentinel://`` to these
    transports (its alias table is how transports are named; a URL keeps its scheme, so
    Flower and anything else reading it still sees Redis)."""
    TRANSPORT_ALIASES.update(
        redis=f"{__name__}:Transport",
        rediss=f"{__name__}:Transport",
        sentinel=f"{__name__}:SentinelTransport",
    )
