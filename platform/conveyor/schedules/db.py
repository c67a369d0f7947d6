"""Schedules in Redis: each schedule's last fired tick, and its last runs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from conveyor.db import keyspace
from conveyor.db.connections import broker_errors
from conveyor.db.scripts import Scripts, script

FIRED = script("schedules", "fired")
KEEP_RUNS = 20


@dataclass(frozen=True)
class Run:
    tick: float | None  # None: fired by hand
    id: str  # '' when nothing was invoked
    outcome: str  # fired, manual, skipped (the last still ran), missed, or why it failed
    at: float

    @classmethod
    def parse(cls, text: str) -> Run:
        data: dict[str, Any] = json.loads(text)
        tick = data.get("tick")
        return cls(
            None if tick is None or tick < 0 else float(tick),
            data["id"],
            data["outcome"],
            float(data["at"]),
        )


class ScheduleStore:
    """The scheduler's and the API's side."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.scripts = Scripts(redis)

    async def lasts(self, schedules: list[tuple[str, int]]) -> list[float | None]:
        """The last fired tick of each (function, index)."""
        with broker_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for function, index in schedules:
                    pipe.hget(keyspace.schedule_state(function, index), "last")
                found = await pipe.execute()
        return [None if value is None else float(value) for value in found]

    async def fired(
        self, function: str, index: int, tick: float | None, invocation_id: str, outcome: str
    ) -> bool:
        """Record a tick (or, ``tick`` None, a run fired by hand): True if recorded here."""
        with broker_errors():
            done = await self.scripts.call(
                FIRED,
                state=keyspace.schedule_state(function, index),
                runs=keyspace.schedule_runs(function, index),
                tick="manual" if tick is None else repr(tick),
                id=invocation_id,
                outcome=outcome,
                now=repr(time.time()),
                keep=KEEP_RUNS,
            )
        return bool(done)

    async def runs(self, function: str, index: int) -> list[Run]:
        with broker_errors():
            found = await self.redis.lrange(keyspace.schedule_runs(function, index), 0, -1)
        return [Run.parse(str(text)) for text in found]
