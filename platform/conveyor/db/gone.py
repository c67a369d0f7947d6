"""Sorted sets of invocation ids (an index, a count) whose records may have expired: the
members whose record is gone are taken out."""

from __future__ import annotations

from typing import Any

from conveyor.db import keyspace


async def drop_gone(redis: Any, key: str, members: list[str], ids: list[str]) -> list[bool]:
    """Whether each of ``ids`` (one per member of the sorted set ``key``) still has its
    record; the members of those that have none are removed from ``key``."""
    async with redis.pipeline(transaction=False) as pipe:
        for invocation_id in ids:
            pipe.exists(keyspace.record(invocation_id))
        found = [bool(n) for n in await pipe.execute()]
    gone = [m for m, there in zip(members, found, strict=True) if not there]
    if gone:
        await redis.zrem(key, *gone)
    return found
