"""Deployments (``PUT /functions/{name}``) in Redis: each attempt's state and outcome.

A pushed folder is a *deployment*: accepted (``202``) once its bundle is read, then
unpacked, inspected and stored by the API process that took it; its record says how that
ended -- ``deployed``, ``unchanged``, or ``failed`` with the problem a synchronous deploy
would have answered. Any API process can read it. A record still ``running`` long after its
inspection could have taken was left by an API process that stopped: it reads as failed.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis.asyncio as aioredis

from conveyor.db import keyspace
from conveyor.db.connections import broker_errors

KEEP = 24 * 3600  # seconds a deployment's record is readable


class DeploymentLog:
    """Create, finish and read deployment records."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def start(self, deployment_id: str, function: str) -> None:
        fields: dict[Any, Any] = {
            "function": function,
            "status": "running",
            "started_at": repr(time.time()),
        }
        with broker_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(keyspace.deployment(deployment_id), mapping=fields)
                pipe.expire(keyspace.deployment(deployment_id), KEEP)
                await pipe.execute()

    async def finish(self, deployment_id: str, status: str, **fields: Any) -> None:
        values: dict[Any, Any] = {"status": status, "finished_at": repr(time.time())}
        values |= {k: json.dumps(v) for k, v in fields.items()}
        with broker_errors():
            await self.redis.hset(keyspace.deployment(deployment_id), mapping=values)

    async def get(self, deployment_id: str) -> dict[str, Any] | None:
        with broker_errors():
            raw = cast(dict[str, str], await self.redis.hgetall(keyspace.deployment(deployment_id)))
        if not raw:
            return None
        plain = ("function", "status", "started_at", "finished_at")
        found: dict[str, Any] = {k: raw[k] for k in plain if k in raw}
        found |= {k: json.loads(v) for k, v in raw.items() if k not in plain}
        return found
