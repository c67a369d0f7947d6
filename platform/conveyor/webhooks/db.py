"""Webhook deliveries in Redis, for the deliverer (:mod:`conveyor.webhooks.deliverer`).

A delivery is queued by the Lua script that makes its event happen (see
:mod:`conveyor.invocations.records`): a hash ``conveyor:webhook:<id>:<event>`` holding the record
as it was, and its name in :data:`keyspace.WEBHOOKS_DUE` scored by when it is due. A deliverer
*claims* due ones by pushing their score a lease into the future: one that dies while
delivering loses its claim when the lease runs out, and the delivery is made again (with
the same ``webhook-id``). Nothing is removed before its outcome is known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from conveyor.db import keyspace
from conveyor.db.connections import broker_errors
from conveyor.db.scripts import Scripts, script

CLAIM = script("webhooks", "claim")
SETTLE = script("webhooks", "settle")


@dataclass(frozen=True)
class Delivery:
    """One event of one invocation (or map job), owed to one URL."""

    key: str  # its hash, and its member in the due set
    id: str  # webhook-id: the same on every attempt
    invocation: str
    event: str
    url: str
    record: dict[str, str]  # the invocation's record when the event happened
    created_at: float
    attempts: int

    @classmethod
    def from_hash(cls, key: str, raw: dict[str, str]) -> Delivery:
        return cls(
            key=key,
            id=raw["id"],
            invocation=raw["invocation"],
            event=raw["event"],
            url=raw["url"],
            record=json.loads(raw["record"]),
            created_at=float(raw["created_at"]),
            attempts=int(raw.get("attempts", 0)),
        )

    @property
    def of_map_job(self) -> bool:
        return self.record.get("kind") == "map"

    @property
    def owner_key(self) -> str:
        """The hash whose webhook status this delivery's attempts update."""
        return (
            keyspace.map_job(self.invocation)
            if self.of_map_job
            else keyspace.record(self.invocation)
        )


class WebhookQueue:
    """Claim, wait for and settle deliveries."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.scripts = Scripts(redis)

    async def claim(self, now: float, lease: float, count: int) -> list[Delivery]:
        """Up to ``count`` due deliveries, each now held for ``lease`` seconds."""
        with broker_errors():
            claimed = await self.scripts.call(
                CLAIM, due=keyspace.WEBHOOKS_DUE, now=now, lease=lease, count=count
            )
            if not claimed:
                return []
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in claimed:
                    pipe.hgetall(key)
                found = await pipe.execute()
        deliveries = []
        for key, raw in zip(claimed, found, strict=True):
            if raw:
                deliveries.append(Delivery.from_hash(str(key), cast(dict[str, str], raw)))
            else:  # settled by someone else meanwhile
                await self.redis.zrem(keyspace.WEBHOOKS_DUE, key)
        return deliveries

    async def next_due(self) -> float | None:
        with broker_errors():
            first: Any = await self.redis.zrange(keyspace.WEBHOOKS_DUE, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def wait(self, timeout: float) -> None:
        """Until a delivery is queued (its script pushes a wake-up) or ``timeout``."""
        with broker_errors():
            await self.redis.blpop([keyspace.WEBHOOKS_WAKE], timeout=max(timeout, 0.01))

    async def settle(
        self,
        delivery: Delivery,
        status: str,
        attempts: int,
        error: str = "",
        retry_at: float | None = None,
    ) -> None:
        """Record an attempt: ``retry_at`` keeps the delivery for then; else it is done."""
        with broker_errors():
            await self.scripts.call(
                SETTLE,
                delivery=delivery.key,
                due=keyspace.WEBHOOKS_DUE,
                job=delivery.owner_key,
                status=status,
                attempts=attempts,
                error=error[:500],
                retry_at="" if retry_at is None else repr(retry_at),
                event=delivery.event,
            )

    async def postpone(self, delivery: Delivery, at: float) -> None:
        """Not attempted (its host is busy): due again at ``at``, attempts unchanged."""
        with broker_errors():
            await self.redis.zadd(keyspace.WEBHOOKS_DUE, {delivery.key: at}, xx=True)
