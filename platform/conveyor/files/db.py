"""The file store's Redis half: each file's record, who holds it, when it expires.

A file's record is a hash (:class:`FileMeta`); its bytes are in Redis (a list of chunks,
:class:`~conveyor.files.blobs.RedisBlobs`) or in an S3 bucket. Every file is in one sorted
set by when it expires; :meth:`FileIndex.due` hands the sweeper what is due, less what an
unfinished invocation or map job still holds (``file-holders``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import cast

import redis
import redis.asyncio

from conveyor.db import keyspace
from conveyor.db.scripts import Scripts, script

PUT = script("files", "put")
REMOVE = script("files", "remove")
RESERVE = script("files", "reserve")
HELD_RECHECK = 60.0  # seconds before a held file that is due is looked at again
# What still holds a file: an invocation that has not finished, a map job that is running.
_ACTIVE_JOB = {"queued", "running", "retrying"}
_ACTIVE_MAP = {"uploading", "running"}


@dataclass(frozen=True)
class FileMeta:
    """A stored file, as its record says."""

    id: str
    size: int
    sha256: str
    content_type: str
    filename: str
    owner: str  # the API key's id ('' without keys)
    kind: str  # upload, output
    store: str  # redis, s3
    created_at: float
    expires_at: float
    sniffed: str = ""  # the media type its leading bytes show ('' unknown)

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> FileMeta:
        return cls(
            id=raw["id"],
            size=int(raw.get("size", 0)),
            sha256=raw.get("sha256", ""),
            content_type=raw.get("content_type", "application/octet-stream"),
            filename=raw.get("filename", ""),
            owner=raw.get("owner", ""),
            kind=raw.get("kind", "upload"),
            store=raw.get("store", "redis"),
            created_at=float(raw.get("created_at", 0)),
            expires_at=float(raw.get("expires_at", 0)),
            sniffed=raw.get("sniffed", ""),
        )

    @classmethod
    def ready(cls, raw: dict[str, str]) -> FileMeta | None:
        """The file a record describes, once written whole (None: no record, or a file
        still being written)."""
        return cls.from_hash(raw) if raw and raw.get("state") == "ready" else None

    def fields(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items() if k not in ("id", "expires_at")}

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at <= (time.time() if now is None else now)


class FileIndex:
    """Records of files, on a synchronous Redis client (the API calls it from threads)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.scripts = Scripts(client)

    def put(self, meta: FileMeta, state: str) -> None:
        self.scripts.call(
            PUT,
            file=keyspace.file(meta.id),
            expiry=keyspace.FILES_EXPIRY,
            id=meta.id,
            state=state,
            expires_at=repr(meta.expires_at),
            fields=_pairs(meta.fields()),
        )

    def reserve(self, file_id: str, usage: str, size: int, quota: int | None) -> int | None:
        """Count ``size`` bytes of ``file_id`` on ``usage`` (files/reserve): None if they
        fit ``quota``, else the bytes already held."""
        held = self.scripts.call(
            RESERVE,
            file=keyspace.file(file_id),
            usage=usage,
            bytes=size,
            quota="" if quota is None else quota,
        )
        return None if int(held) < 0 else int(held)

    def get(self, file_id: str) -> FileMeta | None:
        """A file written whole (None: unknown, being written, or removed)."""
        return FileMeta.ready(cast("dict[str, str]", self.redis.hgetall(keyspace.file(file_id))))

    def remove(self, file_id: str) -> str:
        """Remove the record (and bytes kept in Redis): where its bytes were, or ''."""
        return str(
            self.scripts.call(
                REMOVE,
                file=keyspace.file(file_id),
                data=keyspace.file_data(file_id),
                holders=keyspace.file_holders(file_id),
                expiry=keyspace.FILES_EXPIRY,
                id=file_id,
            )
        )

    def due(self, now: float, limit: int = 100) -> list[str]:
        """Files past their expiry that nothing holds any more (those still held are looked
        at again in :data:`HELD_RECHECK` seconds)."""
        ids = cast(
            "list[str]",
            self.redis.zrangebyscore(keyspace.FILES_EXPIRY, "-inf", now, start=0, num=limit),
        )
        free = []
        for file_id in ids:
            if self._held(file_id):
                self.redis.zadd(keyspace.FILES_EXPIRY, {file_id: now + HELD_RECHECK})
            else:
                free.append(file_id)
        return free

    def _held(self, file_id: str) -> bool:
        holders = sorted(cast("set[str]", self.redis.smembers(keyspace.file_holders(file_id))))
        if not holders:
            return False
        pipe = self.redis.pipeline(transaction=False)
        for holder in holders:
            kind, _, ident = holder.partition(":")
            key = keyspace.record(ident) if kind == "job" else keyspace.map_job(ident)
            pipe.hget(key, "status")
        statuses = pipe.execute()
        for holder, status in zip(holders, statuses, strict=True):
            active = _ACTIVE_JOB if holder.startswith("job:") else _ACTIVE_MAP
            if status in active:
                return True
        return False

    def lock_sweep(self, owner: str, seconds: float) -> bool:
        """One sweeper at a time among the API processes."""
        return bool(
            self.redis.set(keyspace.FILES_SWEEP_LOCK, owner, nx=True, px=int(seconds * 1000))
        )


async def get_async(client: redis.asyncio.Redis, file_id: str) -> FileMeta | None:
    """:meth:`FileIndex.get` on the API's asynchronous client (no thread for a look-up)."""
    return FileMeta.ready(cast("dict[str, str]", await client.hgetall(keyspace.file(file_id))))


async def hold(client: redis.asyncio.Redis, file_ids: Iterable[str], holder: str) -> None:
    """``holder`` (``map:<id>``) uses these files: the sweeper keeps them until it has
    ended. (An invocation's holds are taken by its submit script: ``files/hold.lua``.)"""
    async with client.pipeline(transaction=False) as pipe:
        for file_id in file_ids:
            pipe.sadd(keyspace.file_holders(file_id), holder)
        await pipe.execute()


def _pairs(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]
