"""API keys in Redis (see :mod:`conveyor.auth.keys` for what a key is).

Only a key's SHA-256 is stored. Every API process reads a key's record once and keeps it
while its subscription to :data:`keyspace.API_KEYS_CHANNEL` is live; creating or revoking a
key publishes its digest there, so a revoked key stops working at once everywhere. When
the subscription is down, nothing is cached: each request asks Redis.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict
from typing import cast

import redis.asyncio as aioredis

from conveyor.auth.keys import KeyLimits, KeyRecord, check_name, digest, new_key, parse_scopes
from conveyor.db import keyspace
from conveyor.db.connections import broker_errors
from conveyor.db.scripts import Scripts, script
from conveyor.db.subscription import Subscription
from conveyor.errors import ApiKeyError

TOUCH_EVERY = 60.0  # seconds between last-used writes for one key, per process
CACHE_LIMIT = 10_000  # digests remembered (known and unknown) before the cache starts over

CREATE = script("auth", "create")
REVOKE = script("auth", "revoke")
LIMIT = script("auth", "limit")


_KEYS = {
    "records": keyspace.API_KEYS,
    "names": keyspace.API_KEY_NAMES,
    "used": keyspace.API_KEYS_USED,
    "channel": keyspace.API_KEYS_CHANNEL,
    "webhook_secrets": keyspace.API_KEY_WEBHOOK_SECRETS,
}


def _record(raw: str) -> KeyRecord:
    data = json.loads(raw)
    return KeyRecord(
        data["id"],
        data["name"],
        tuple(data["scopes"]),
        data["created_at"],
        data["digest"],
        KeyLimits(**data.get("limits", {})),
    )


class ApiKeyStore:
    """Create, list, revoke and find API keys."""

    def __init__(self, redis: aioredis.Redis, subscription: Subscription | None = None) -> None:
        self.redis = redis
        self.scripts = Scripts(redis)
        self._subscription = subscription
        self._cache: dict[str, KeyRecord | None] = {}
        self._changes = 0  # bumped per invalidation: a read that raced one is not cached
        self._touched: dict[str, float] = {}
        if subscription is not None:
            subscription.on(keyspace.API_KEYS_CHANNEL, self._changed, self._cache.clear)

    async def create(
        self,
        name: str,
        scopes: list[str],
        webhook_secret: str = "",
        limits: KeyLimits = KeyLimits(),  # noqa: B008  # frozen: one shared default is fine
    ) -> tuple[str, KeyRecord]:
        """A new key (returned once, never stored) and its record; ``webhook_secret``
        signs the webhooks of its invocations instead of the platform's secrets."""
        key = new_key()
        record = KeyRecord(
            id=secrets.token_hex(8),
            name=check_name(name),
            scopes=parse_scopes(scopes),
            created_at=time.time(),
            digest=digest(key),
            limits=limits,
        )
        with broker_errors():
            made = await self.scripts.call(
                CREATE,
                **_KEYS,
                name=record.name,
                digest=record.digest,
                record=json.dumps(asdict(record)),
                key_id=record.id,
                webhook_secret=webhook_secret,
            )
        if not made:
            raise ApiKeyError(f"a key named {name!r} exists; revoke it or choose another name")
        return key, record

    async def list(self) -> list[tuple[KeyRecord, float | None]]:
        """Every key's record and when it was last used (None: never)."""
        with broker_errors():
            records = await self.redis.hgetall(keyspace.API_KEYS)
            used = await self.redis.hgetall(keyspace.API_KEYS_USED)
        found = [_record(raw) for raw in cast(dict[str, str], records).values()]
        return [
            (r, float(used[r.digest]) if r.digest in used else None)
            for r in sorted(found, key=lambda r: r.name)
        ]

    async def revoke(self, name: str) -> None:
        with broker_errors():
            revoked = await self.scripts.call(REVOKE, **_KEYS, name=name)
        if not revoked:
            raise ApiKeyError(f"no key named {name!r} (conveyor keys ls lists them)")

    async def limit(self, name: str, limits: KeyLimits) -> KeyRecord:
        """Set a key's limits (each API process drops the key it cached): its record."""
        with broker_errors():
            updated = await self.scripts.call(
                LIMIT, **_KEYS, name=name, limits=json.dumps(limits.shown())
            )
        if not updated:
            raise ApiKeyError(f"no key named {name!r} (conveyor keys ls lists them)")
        return _record(str(updated))

    async def webhook_secret(self, key_id: str) -> str | None:
        """The webhook signing secret of the API key with this id, if it was given one."""
        with broker_errors():
            found = await self.redis.hget(keyspace.API_KEY_WEBHOOK_SECRETS, key_id)
        return None if found is None else str(found)

    async def find(self, key_digest: str) -> KeyRecord | None:
        """The record of the key with this digest; None for an unknown or revoked one."""
        live = self._subscription is not None and self._subscription.connected
        if live and key_digest in self._cache:
            return self._cache[key_digest]
        changes = self._changes
        with broker_errors():
            raw = await self.redis.hget(keyspace.API_KEYS, key_digest)
        record = None if raw is None else _record(str(raw))
        if live and changes == self._changes:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[key_digest] = record
        return record

    async def touch(self, record: KeyRecord) -> None:
        """Note that the key was used (at most once a minute per key and process)."""
        now = time.time()
        if now - self._touched.get(record.digest, 0.0) < TOUCH_EVERY:
            return
        self._touched[record.digest] = now
        with broker_errors():
            await self.redis.hset(keyspace.API_KEYS_USED, record.digest, repr(now))

    def _changed(self, key_digest: str) -> None:
        self._changes += 1
        self._cache.pop(key_digest, None)


async def usage(client: aioredis.Redis, key_id: str) -> dict[str, int]:
    """What a key has in use against its limits: invocations unfinished and waiting,
    accepted today (UTC), and bytes of files held (counted only under max_file_bytes)."""
    day = time.strftime("daily:%Y%m%d", time.gmtime())
    with broker_errors():
        async with client.pipeline(transaction=False) as pipe:
            pipe.zcard(keyspace.key_usage(key_id, "inflight"))
            pipe.zcard(keyspace.key_usage(key_id, "waiting"))
            pipe.get(keyspace.key_usage(key_id, day))
            pipe.get(keyspace.key_usage(key_id, "file-bytes"))
            inflight, waiting, today, file_bytes = await pipe.execute()
    return {
        "inflight": int(inflight),
        "queued": int(waiting),
        "today": int(today or 0),
        "file_bytes": int(file_bytes or 0),
    }
