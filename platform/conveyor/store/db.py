"""The function store in Redis: every good version by digest, which one serves, history.

A version is stored as a record (manifest, schemas, where it came from, sizes) and a bundle
(the folder as a zip archive, :mod:`conveyor.store.bundle`), both kept while the version is
retained. The bundle is a list of chunks just under 1 MiB: Redis's allocator rounds a
value up to its size class, so one 20 MiB string took 24 MiB, where the chunks take what
they hold (and no command carries more than a few MiB).

A function's state says which version serves, whether it is pinned (rolled back), the
latest deploy and where it came from, and why its folder's newest version is broken.
Every change of what serves is one Lua script that also publishes the function's name on
:data:`keyspace.FUNCTIONS_CHANNEL`, so every API process follows at once.

Which source wins: the newest deploy. A folder's version is deployed when it differs from
the last version of that folder the store saw (so an API that restarts over an unchanged
folder changes nothing, and a push made since keeps serving); a push always deploys.

Collection keeps each function's ``keep`` most recently deployed versions, the serving,
pinned and latest ones, and any version with queued or running work: the submit script
counts a version's invocations and map jobs up, the scripts that end them count down
(:data:`keyspace.VERSIONS_IN_USE`), and :data:`COLLECT` takes only a version at zero.

:class:`FunctionStore` is the API's (async); :class:`StoreReader` is a worker's (sync).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.client import NEVER_DECODE

from conveyor.db import keyspace
from conveyor.db.connections import broker_errors
from conveyor.db.scripts import Scripts, script
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.manifest import Manifest
from conveyor.store.bucket import BucketBundles, from_bucket, in_bucket

FOLDER, PUSH, TRAINING = "folder", "push", "training"
CHUNK = 1024 * 1024 - 64  # bytes: with Redis's headers, exactly a 1 MiB allocation
CHUNKS_PER_COMMAND = 4
UPLOAD_TTL = 600  # seconds a half-written bundle (its writer died) lingers

KEEP_BUNDLE = script("store", "keep_bundle")
DEPLOY = script("store", "deploy")
FAILED = script("store", "failed")
REMOVE = script("store", "remove")
PIN = script("store", "pin")
UNPIN = script("store", "unpin")
COLLECT = script("store", "collect")


_SUMMARY = (
    "version",
    "created_at",
    "deployed_at",
    "source",
    "size",
    "files",
    "files_bytes",
    "training",
)


@dataclass(frozen=True)
class StoredFunction:
    """A function's state: what serves, and why its folder's newest version cannot."""

    name: str
    serving: str | None
    pinned: str | None
    latest: str | None
    origin: str | None  # where the latest deploy came from: folder or push
    error: str | None
    error_version: str | None
    folder_version: str | None  # the folder's last version the store saw, good or not

    @classmethod
    def from_hash(cls, name: str, raw: dict[str, str]) -> StoredFunction:
        return cls(
            name,
            raw.get("serving") or None,
            raw.get("pinned") or None,
            raw.get("latest") or None,
            raw.get("origin"),
            raw.get("error"),
            raw.get("error_version"),
            raw.get("folder_version"),
        )


@dataclass(frozen=True)
class StoredVersion:
    """A retained version: where it came from, its size, and (when read whole) its
    manifest and schemas. ``active``: its invocations and map jobs queued or running."""

    name: str
    version: str
    created_at: float
    deployed_at: float
    source: str  # folder, push or training
    size: int  # the bundle, as Redis holds it
    files: int
    files_bytes: int  # the folder, unpacked
    manifest: Manifest | None = None
    schemas: FunctionSchemas | None = None
    active: int = 0
    training: str | None = None  # the training that made it (source training)

    @classmethod
    def from_fields(cls, name: str, raw: dict[str, str], active: int = 0) -> StoredVersion:
        return cls(
            name,
            raw["version"],
            float(raw["created_at"]),
            float(raw["deployed_at"]),
            raw["source"],
            int(raw["size"]),
            int(raw["files"]),
            int(raw["files_bytes"]),
            Manifest.model_validate_json(raw["manifest"]) if "manifest" in raw else None,
            FunctionSchemas.from_json(raw["schemas"]) if "schemas" in raw else None,
            active,
            raw.get("training") or None,
        )


def deploy_args(
    name: str,
    version: str,
    *,
    now: float,
    source: str,
    source_dir: str,
    manifest: Manifest,
    schemas: FunctionSchemas,
    sizes: tuple[int, int, int],
    serve: bool = True,
    training: str = "",
) -> dict[str, Any]:
    """The keys and arguments of :data:`DEPLOY`; ``sizes``: the bundle's bytes, files,
    files' bytes; ``serve``: False to retain the version without serving it;
    ``training``: the id of the training that made it."""
    size, files, files_bytes = sizes
    return {
        **_function_keys(name),
        "versions": keyspace.function_versions(name),
        "version_record": keyspace.function_version(name, version),
        "bundle": keyspace.bundle(name, version),
        "stored_functions": keyspace.STORED_FUNCTIONS,
        "name": name,
        "version": version,
        "now": repr(now),
        "source": source,
        "source_dir": source_dir,
        "manifest": manifest.model_dump_json(),
        "schemas": schemas.to_json(),
        "size": size,
        "files": files,
        "files_bytes": files_bytes,
        "serve": "1" if serve else "0",
        "training": training,
    }


def _function_keys(name: str) -> dict[str, str]:
    """The keys every change of a function's state names."""
    return {
        "state": keyspace.function_state(name),
        "serving": keyspace.SERVING,
        "channel": keyspace.FUNCTIONS_CHANNEL,
    }


class FunctionStore:
    """The API's side: store bundles, deploy, pin, remove, read states and history."""

    def __init__(self, client: aioredis.Redis, bucket: BucketBundles | None = None) -> None:
        self.redis = client
        self.scripts = Scripts(client)
        self.bucket = bucket  # large bundles go there (see conveyor.store.bucket)

    async def has_bundle(self, name: str, version: str) -> bool:
        with broker_errors():
            return bool(await self.redis.exists(keyspace.bundle(name, version)))

    async def put_bundle(self, name: str, version: str, data: bytes) -> bool:
        """Store a bundle unless it is there: whether this call stored it."""
        upload = keyspace.bundle_upload(str(uuid.uuid4()))
        chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        if self.bucket is not None and self.bucket.wanted(len(data)):
            chunks = [await asyncio.to_thread(self.bucket.put, name, version, data)]
        with broker_errors():
            for i in range(0, len(chunks), CHUNKS_PER_COMMAND):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.rpush(upload, *chunks[i : i + CHUNKS_PER_COMMAND])
                    pipe.expire(upload, UPLOAD_TTL)
                    await pipe.execute()
            kept = await self.scripts.call(
                KEEP_BUNDLE, upload=upload, bundle=keyspace.bundle(name, version)
            )
        return bool(kept)

    async def deploy(self, values: dict[str, Any]) -> str:
        """Run :data:`DEPLOY` (see :func:`deploy_args`): deployed, unchanged or no-bundle."""
        with broker_errors():
            return str(await self.scripts.call(DEPLOY, **values))

    async def failed(self, name: str, version: str, error: str, source_dir: str, now: float) -> str:
        with broker_errors():
            answer = await self.scripts.call(
                FAILED,
                **_function_keys(name),
                name=name,
                version=version,
                error=error,
                now=repr(now),
                source_dir=source_dir,
            )
        return str(answer)

    async def remove(self, name: str, *, folder: str | None = None) -> bool:
        """Remove ``name``; with ``folder``, only if its latest deploy came from there."""
        mode, source_dir = ("folder", folder) if folder is not None else ("any", "")
        with broker_errors():
            removed = await self.scripts.call(
                REMOVE, **_function_keys(name), name=name, mode=mode, source_dir=source_dir
            )
        return bool(removed)

    async def pin(self, name: str, version: str, now: float) -> str:
        with broker_errors():
            answer = await self.scripts.call(
                PIN,
                **_function_keys(name),
                versions=keyspace.function_versions(name),
                version_record=keyspace.function_version(name, version),
                name=name,
                version=version,
                now=repr(now),
            )
        return str(answer)

    async def unpin(self, name: str, now: float) -> str:
        with broker_errors():
            answer = await self.scripts.call(
                UNPIN, **_function_keys(name), name=name, now=repr(now)
            )
        return str(answer)

    async def states(self) -> dict[str, StoredFunction]:
        """Every function's state."""
        with broker_errors():
            names = list(cast(dict[str, str], await self.redis.hgetall(keyspace.SERVING)))
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(keyspace.function_state(name))
                raws = await pipe.execute()
        return {
            n: StoredFunction.from_hash(n, raw) for n, raw in zip(names, raws, strict=True) if raw
        }

    async def state(self, name: str) -> StoredFunction | None:
        with broker_errors():
            raw = await self.redis.hgetall(keyspace.function_state(name))
        return StoredFunction.from_hash(name, cast(dict[str, str], raw)) if raw else None

    async def version(self, name: str, version: str) -> StoredVersion | None:
        """A retained version, whole (manifest and schemas); None if not retained."""
        with broker_errors():
            raw = await self.redis.hgetall(keyspace.function_version(name, version))
        return StoredVersion.from_fields(name, cast(dict[str, str], raw)) if raw else None

    async def history(self, name: str) -> list[StoredVersion]:
        """Retained versions, most recently deployed first, with the work each has."""
        with broker_errors():
            versions = [
                str(v) for v in await self.redis.zrevrange(keyspace.function_versions(name), 0, -1)
            ]
            if not versions:
                return []
            async with self.redis.pipeline(transaction=False) as pipe:
                for version in versions:
                    pipe.hmget(keyspace.function_version(name, version), _SUMMARY)
                pipe.hmget(keyspace.VERSIONS_IN_USE, [keyspace.in_use(name, v) for v in versions])
                *rows, active = await pipe.execute()
        found = []
        for row, count in zip(rows, active, strict=True):
            if row[0] is not None:
                found.append(
                    StoredVersion.from_fields(
                        name, dict(zip(_SUMMARY, row, strict=True)), int(count or 0)
                    )
                )
        return found

    async def collect(self, name: str, keep: int) -> tuple[list[str], list[str]]:
        """Collect ``name``'s versions past ``keep``: (collected, kept because in use)."""
        with broker_errors():
            versions = [
                str(v) for v in await self.redis.zrevrange(keyspace.function_versions(name), 0, -1)
            ]
            collected, busy = [], []
            for version in versions:
                environment = await self._environment(name, version)
                outcome = await self.scripts.call(
                    COLLECT,
                    versions=keyspace.function_versions(name),
                    state=keyspace.function_state(name),
                    in_use=keyspace.VERSIONS_IN_USE,
                    version_record=keyspace.function_version(name, version),
                    bundle=keyspace.bundle(name, version),
                    stored_functions=keyspace.STORED_FUNCTIONS,
                    name=name,
                    version=version,
                    keep=keep,
                    in_use_field=keyspace.in_use(name, version),
                    environment_lock=keyspace.environment_lock(environment),
                    environment_users=keyspace.environment_users(environment),
                    environment=environment,
                )
                if outcome == 1:
                    collected.append(version)
                    if self.bucket is not None:  # its object, if it had one (none: a no-op)
                        await asyncio.to_thread(self.bucket.delete, name, version)
                elif outcome == -1:
                    busy.append(version)
        return collected, busy

    async def _environment(self, name: str, version: str) -> str:
        """The id of the environment a stored version runs in ('' for the platform's)."""
        raw = await self.redis.hget(keyspace.function_version(name, version), "manifest")
        if raw is None:
            return ""
        return Manifest.model_validate_json(str(raw)).environment_id or ""

    async def stored_functions(self) -> list[str]:
        """Functions with retained versions (removed ones among them, until collected)."""
        with broker_errors():
            return sorted(cast(set[str], await self.redis.smembers(keyspace.STORED_FUNCTIONS)))

    async def schemas(self, name: str, version: str) -> FunctionSchemas | None:
        """A retained version's schemas (an API that sees a folder it deployed before
        does not inspect it again)."""
        with broker_errors():
            raw = await self.redis.hget(keyspace.function_version(name, version), "schemas")
        return None if raw is None else FunctionSchemas.from_json(str(raw))


class StoreReader:
    """A worker's side: what serves, a version's manifest, a version's bundle."""

    def __init__(
        self, client: Callable[[], redis.Redis], bucket: BucketBundles | None = None
    ) -> None:
        self._client = client  # a factory: a pool child makes its own connection
        self._bucket = bucket
        self._manifests: dict[tuple[str, str], Manifest] = {}

    def serving(self) -> dict[str, tuple[str, Manifest]]:
        """Every function that has a version to serve: name -> (version, manifest)."""
        client = self._client()
        found = cast(dict[str, str], client.hgetall(keyspace.SERVING))
        serving = {name: version for name, version in found.items() if version}
        missing = [(n, v) for n, v in serving.items() if (n, v) not in self._manifests]
        if missing:
            with client.pipeline(transaction=False) as pipe:
                for name, version in missing:
                    pipe.hget(keyspace.function_version(name, version), "manifest")
                for pair, raw in zip(missing, pipe.execute(), strict=True):
                    if raw is not None:
                        self._manifests[pair] = Manifest.model_validate_json(raw)
        return {
            name: (version, self._manifests[(name, version)])
            for name, version in serving.items()
            if (name, version) in self._manifests
        }

    def manifest(self, name: str, version: str) -> Manifest | None:
        """A retained version's manifest; None if the store does not hold it."""
        cached = self._manifests.get((name, version))
        if cached is None:
            raw = self._client().hget(keyspace.function_version(name, version), "manifest")
            if raw is None:
                return None
            cached = self._manifests[(name, version)] = Manifest.model_validate_json(str(raw))
        return cached

    def bundle(self, name: str, version: str) -> bytes | None:
        command: Any = self._client().execute_command  # untyped in redis-py
        chunks = command("LRANGE", keyspace.bundle(name, version), 0, -1, **{NEVER_DECODE: True})
        if (marker := in_bucket(chunks)) is not None:
            return from_bucket(self._bucket, marker)
        return b"".join(chunks) if chunks else None

    def retained(self, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (name, version) the store still holds."""
        if not pairs:
            return set()
        with self._client().pipeline(transaction=False) as pipe:
            for name, version in pairs:
                pipe.exists(keyspace.function_version(name, version))
            found = pipe.execute()
        return {pair for pair, exists in zip(pairs, found, strict=True) if exists}
