"""Trainings in Redis: each function's training ids by when they started, newest first.

A training's state is its invocation record (``conveyor:job:<id>``); this index only lists
them. An id whose record has expired or was deleted is dropped when a listing meets it.
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis

from conveyor.db import keyspace
from conveyor.db.connections import broker_errors

KEEP = 1000  # ids listed per function, newest first


class TrainingIndex:
    """The API's side."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def add(self, function: str, training_id: str, at: float) -> None:
        key = keyspace.trainings(function)
        with broker_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {training_id: at})
                pipe.zremrangebyrank(key, 0, -KEEP - 1)
                await pipe.execute()

    async def newest(self, function: str, limit: int) -> list[str]:
        """Up to ``limit`` ids whose records still exist, newest first."""
        key = keyspace.trainings(function)
        with broker_errors():
            ids = cast("list[str]", await self.redis.zrevrange(key, 0, limit - 1))
            if not ids:
                return []
            async with self.redis.pipeline(transaction=False) as pipe:
                for training_id in ids:
                    pipe.exists(keyspace.record(training_id))
                found = await pipe.execute()
            gone = [i for i, there in zip(ids, found, strict=True) if not there]
            if gone:
                await self.redis.zrem(key, *gone)
        return [i for i, there in zip(ids, found, strict=True) if there]
