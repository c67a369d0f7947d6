"""The inspector's findings, kept in Redis by version digest.

A version's digest covers every file of its folder, so what its inspection found holds for
as long as the folder has that digest: every API process (and every restart) reads it from
here instead of inspecting again. Only versions that inspected well are kept: a failure may
depend on the machine (a package installed since, a slow disk) and is found again.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from conveyor.functions.loader import FunctionSchemas
from conveyor.queueing import keys
from conveyor.queueing.connections import broker_errors

TTL = 30 * 24 * 3600  # seconds; renewed whenever an API process reads it


class RedisSchemaCache:
    """:class:`~conveyor.functions.catalog.SchemaCache` on Redis."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def get(self, version: str) -> FunctionSchemas | None:
        with broker_errors():
            raw = await self.redis.getex(keys.schemas(version), ex=TTL)
        return None if raw is None else FunctionSchemas.from_json(str(raw))

    async def put(self, version: str, schemas: FunctionSchemas) -> None:
        with broker_errors():
            await self.redis.set(keys.schemas(version), schemas.to_json(), ex=TTL)
