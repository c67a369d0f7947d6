"""Trainings in Redis: each function's training ids (to list them), and the trainings whose
handler returned, waiting for an API process to make their version.

A training's state is its invocation record (``conveyor:job:<id>``). When its handler
returns, the worker hands it over (``lua/trained.lua``): the new version's folder is a file
of the file store, the record keeps its id and the handler's metrics, and the training
waits in ``conveyor:trainings-pending``. An API process claims it (``lua/claim.lua``, with a
lease: a process that dies leaves it to another), deploys the version and ends the record.
Workers never write the function store (``db/acl.py``).
"""

from __future__ import annotations

import time
from typing import cast

import redis.asyncio as aioredis

from conveyor.db import keyspace
from conveyor.db.connections import broker_errors
from conveyor.db.gone import drop_gone
from conveyor.db.scripts import Scripts, script

TRAINED = script("trainings", "trained")
CLAIM = script("trainings", "claim")
KEEP = 1000  # ids listed per function, newest first


def hand_over(  # noqa: PLR0917
    scripts: Scripts, training_id: str, attempt: int, file: str, metrics: str, logs: str
) -> bool:
    """The worker's side: the handler of ``attempt`` returned ``metrics`` (JSON), printing
    ``logs``, and its version's folder is ``file``. False when the attempt no longer runs
    (cancelled)."""
    return bool(
        scripts.call(
            TRAINED,
            record=keyspace.record(training_id),
            pending=keyspace.TRAININGS_PENDING,
            holders=keyspace.file_holders(file),
            id=training_id,
            attempt=str(attempt),
            file=file,
            metrics=metrics,
            now=repr(time.time()),
            logs=logs,
        )
    )


class TrainingIndex:
    """The API's side."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.scripts = Scripts(redis)

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
            found = await drop_gone(self.redis, key, ids, ids)
        return [i for i, there in zip(ids, found, strict=True) if there]

    async def claim(self, lease: float) -> str | None:
        """A training waiting for its version, now this process's for ``lease`` seconds."""
        with broker_errors():
            found = await self.scripts.call(
                CLAIM, pending=keyspace.TRAININGS_PENDING, now=repr(time.time()), lease=repr(lease)
            )
        return str(found) or None

    async def handed(self, training_id: str) -> tuple[str, str] | None:
        """What the worker handed over: the version's file and the handler's metrics."""
        with broker_errors():
            file, metrics = await self.redis.hmget(
                keyspace.record(training_id), ["trained_file", "trained_metrics"]
            )
        return (str(file), str(metrics)) if file and metrics is not None else None

    async def done(self, training_id: str) -> None:
        with broker_errors():
            await self.redis.zrem(keyspace.TRAININGS_PENDING, training_id)
