"""The Redis half of environments: each lock by its id, and the versions that use it.

The API stores a version's lock when it deploys the version (:meth:`Locks.use`); a worker
reads it to build the environment (:func:`read_lock`), on a machine without the
function's folder too; ``store/lua/collect.lua`` releases it with each collected version
(the ``release`` fragment), and the last one takes the lock with it.
"""

from __future__ import annotations

from typing import cast

import redis
import redis.asyncio as aioredis

from conveyor.db import keyspace
from conveyor.db.connections import broker_errors
from conveyor.db.scripts import Scripts, script

USE = script("environments", "use")


class Locks:
    """The API's side: a deployed version's lock kept, and the version counted."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self.scripts = Scripts(client)

    async def use(self, environment_id: str, lock: str, name: str, version: str) -> None:
        with broker_errors():
            await self.scripts.call(
                USE,
                lock=keyspace.environment_lock(environment_id),
                users=keyspace.environment_users(environment_id),
                text=lock,
                user=keyspace.in_use(name, version),
            )

    async def lock(self, environment_id: str) -> str | None:
        with broker_errors():
            raw = await self.redis.get(keyspace.environment_lock(environment_id))
        return None if raw is None else str(raw)


def read_lock(client: redis.Redis, environment_id: str) -> str | None:
    """A worker's side: the lock to build ``environment_id`` from; None once collected."""
    raw = client.get(keyspace.environment_lock(environment_id))
    return None if raw is None else cast(str, raw)
