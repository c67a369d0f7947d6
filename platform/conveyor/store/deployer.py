"""Deploys: what changes which version serves, as the API does it.

- **A folder** (the API's functions folder, hot-reloaded): each version the catalog
  accepts is packed, stored and deployed; a broken one is recorded as the function's
  error (its last good version keeps serving); a folder removed from the disk removes its
  function, unless a push made since serves it. The store ignores a folder version it has
  already seen, so an API restarting over an unchanged folder changes nothing.
- **A push** (``PUT /functions/{name}``, ``conveyor deploy``): a bundle unpacked in a
  staging folder, validated exactly as a dropped folder (the same manifest errors, the
  same inspection), stored and deployed in one step.
- **Rollback, unpin, remove.**
- **Collection** of each function's versions past ``[store] keep_versions``, after every
  deploy and every ``[store] collect_interval``; a version with queued or running work is
  kept until it has none.

When the subscription to Redis (re)connects, or a deploy could not reach Redis,
:meth:`Deployer.resync_soon` deploys every folder version that is not in the store yet
(Redis may have lost it, or been away) and reloads this process's view of what serves,
retrying until it gets through (the first commands on a pool's connections after a Redis
restart fail).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import socket
import tempfile
import time
from pathlib import Path

from conveyor.environments.db import Locks
from conveyor.environments.deploying import Preparer
from conveyor.errors import (
    BrokerUnavailableError,
    BundleTooLargeError,
    ConveyorError,
    FunctionLoadError,
    ManifestError,
    VersionNotFoundError,
)
from conveyor.functions.inspector import Inspects
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.manifest import MANIFEST_FILE, check_function_name, parse_manifest
from conveyor.functions.registry import (
    Change,
    FunctionEntry,
    FunctionSpec,
    Registry,
    not_found,
)
from conveyor.log import get_logger
from conveyor.settings import Settings
from conveyor.store.bundle import Bundle, pack, unpack
from conveyor.store.db import (
    FOLDER,
    PUSH,
    FunctionStore,
    StoredVersion,
    deploy_args,
)
from conveyor.store.served import Served

log = get_logger(__name__)

RESYNC_FIRST_DELAY = 0.1  # seconds before a failed resync is tried again, doubling
RESYNC_MAX_DELAY = 2.0


async def store_version(
    store: FunctionStore,
    spec: FunctionSpec,
    schemas: FunctionSchemas,
    bundle: Bundle,
    *,
    source: str,
    source_dir: str = "",
    serve: bool = True,
    training: str = "",
) -> str:
    """Store ``bundle`` (once, whoever else stores it) and deploy it (see
    :func:`deploy_args`): deployed, unchanged, retained or no-bundle."""
    name, version = spec.name, spec.version
    args = deploy_args(
        name,
        version,
        now=time.time(),
        source=source,
        source_dir=source_dir,
        manifest=spec.manifest,
        schemas=schemas,
        sizes=(len(bundle.data), bundle.files, bundle.size),
        serve=serve,
        training=training,
    )
    for _ in range(2):  # a retained copy of it may be collected between the two steps
        if not await store.has_bundle(name, version):
            await store.put_bundle(name, version, bundle.data)
        outcome = await store.deploy(args)
        if outcome != "no-bundle":
            break
    return outcome


class Deployer:
    """Changes what serves, in the function store; keeps ``served`` current."""

    def __init__(
        self,
        settings: Settings,
        store: FunctionStore,
        served: Served,
        folder: Registry,
        inspector: Inspects,
        *,
        environments: Preparer | None = None,
        locks: Locks | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.served = served
        self.folder = folder
        self.inspector = inspector
        self.environments = environments  # [environment]s resolved and built (a push's)
        self.locks = locks  # ... and their locks kept for every machine
        # Which functions folder deployed a function: its removal removes only its own.
        self.source_dir = f"{socket.gethostname()}:{folder.root}"
        self.in_sync = False  # every folder version is in the store and the view is read
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._resync: asyncio.Task[None] | None = None
        self._again = False  # asked for while one ran: run once more

    # -- the folder ----------------------------------------------------------------------

    async def on_change(self, change: Change) -> None:
        """The catalog's listener: a folder version accepted or rejected, a folder gone."""
        try:
            if change.action in ("added", "updated"):
                await self._publish(change.name)
            elif change.action == "failed" and change.version is not None:
                await self._failed(change.name, change.version, change.error or "")
            elif change.action == "removed":
                await self._remove_folder(change.name)
        except BrokerUnavailableError as exc:  # deployed when Redis answers again
            log.warning("function_store_unavailable", function=change.name, error=str(exc))
            self.resync_soon()

    def resync_soon(self) -> None:
        """Resync in the background, retrying until it gets through; not ready till then."""
        self.in_sync = False
        if self._resync is None or self._resync.done():
            self._resync = asyncio.create_task(self._resync_until_done(), name="conveyor-resync")
        else:
            self._again = True

    async def close(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync

    async def _resync_until_done(self) -> None:
        delay = RESYNC_FIRST_DELAY
        while True:
            self._again = False
            if await self.resync() and not self._again:
                self.in_sync = True
                log.info("function_store_synced", functions=len(self.served.entries()))
                return
            if not self._again:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESYNC_MAX_DELAY)

    async def resync(self) -> bool:
        """Put every folder version the store lacks in it, drop functions whose folder
        left this disk, and read what serves: whether Redis let it all through."""
        try:
            present = set()
            for entry in self.folder.entries():
                present.add(entry.name)
                await self._resync_one(entry)
            for name in set(await self.store.states()) - present:
                await self._remove_folder(name)
            await self.served.reload()
        except BrokerUnavailableError as exc:
            log.warning("function_store_unavailable", error=str(exc))
            return False
        return True

    async def _resync_one(self, entry: FunctionEntry) -> None:
        """The folder as it is now. (A broken folder's last good version exists only in the
        store: a Redis that lost its data lost it too.)"""
        if entry.error is not None and entry.error_version is not None:
            await self._failed(entry.name, entry.error_version, entry.error)
        elif entry.spec is not None:
            await self._publish(entry.name)

    async def _publish(self, name: str) -> None:
        async with self._locks[name]:
            entry = self.folder.find(name)
            if entry is None or entry.spec is None or entry.schemas is None:
                return  # superseded, or still being checked
            spec, schemas = entry.spec, entry.schemas
            state = await self.store.state(name)
            seen = state is not None and state.folder_version == spec.version
            if seen and state is not None and state.error_version != spec.version:
                return  # seen before: whatever was deployed since keeps serving
            # (a pipeline that failed its check, accepted now: a function it names came)
            try:
                bundle = await asyncio.to_thread(pack, spec.folder, self._limit)
            except BundleTooLargeError as exc:
                await self._failed(name, spec.version, str(exc), locked=True)
                return
            if bundle.version != spec.version:
                return  # the folder changed while it was packed; its next scan deploys it
            await self._deploy(spec, schemas, bundle, FOLDER)

    async def _failed(self, name: str, version: str, error: str, *, locked: bool = False) -> None:
        if not locked:
            async with self._locks[name]:
                await self._failed(name, version, error, locked=True)
            return
        now = time.time()
        if await self.store.failed(name, version, error, self.source_dir, now) == "failed":
            await self.served.reload(name)

    async def _remove_folder(self, name: str) -> None:
        async with self._locks[name]:
            if await self.store.remove(name, folder=self.source_dir):
                log.info("function_undeployed", function=name, because="its folder was removed")
                await self.served.reload(name)

    # -- deploying -----------------------------------------------------------------------

    async def _deploy(
        self,
        spec: FunctionSpec,
        schemas: FunctionSchemas,
        bundle: Bundle,
        source: str,
        *,
        serve: bool = True,
        training: str = "",
    ) -> str:
        """Store ``bundle`` (once, whoever else stores it) and make it serve (``serve``)."""
        name, version = spec.name, spec.version
        if (environment := spec.manifest.environment_id) is not None:
            assert self.environments is not None and self.locks is not None
            lock = await asyncio.to_thread(self.environments.lock, environment)
            await self.locks.use(environment, lock, name, version)
        outcome = await store_version(
            self.store,
            spec,
            schemas,
            bundle,
            source=source,
            source_dir=self.source_dir,
            serve=serve,
            training=training,
        )
        if outcome == "retained":
            log.info("function_version_retained", function=name, version=version, source=source)
            await self._collect(name)
        if outcome == "deployed":
            log.info(
                "function_deployed",
                function=name,
                version=version,
                source=source,
                bundle_bytes=len(bundle.data),
            )
            await self.served.reload(name)
            await self._collect(name)
        return outcome

    async def push(
        self,
        name: str,
        data: bytes,
        *,
        source: str = PUSH,
        serve: bool = True,
        training: str = "",
    ) -> tuple[str, StoredVersion]:
        """Deploy a pushed bundle: (deployed or unchanged, the version); a training's
        (``source`` training, ``training`` its id) serves only with ``serve``, else it is
        retained."""
        check_function_name(name)
        staging = Path(tempfile.mkdtemp(prefix="conveyor-push-"))
        try:
            folder = await asyncio.to_thread(unpack, data, staging / name, self._limit)
            bundle = await asyncio.to_thread(pack, folder, self._limit)
            try:
                manifest = parse_manifest(folder / MANIFEST_FILE, self.settings.queues)
                spec = FunctionSpec(name, bundle.version, folder, manifest)
                if manifest.environment is not None:
                    if self.environments is None:
                        raise FunctionLoadError(f"{name}: [environment] is not served here")
                    spec = await self.environments.prepare(spec)
                schemas = await self.store.schemas(name, spec.version)
                if schemas is None:
                    schemas = await self.inspector.inspect(spec)
            except (ManifestError, FunctionLoadError) as exc:
                raise type(exc)(str(exc).replace(f"{staging}/", "")) from None
            async with self._locks[name]:
                outcome = await self._deploy(
                    spec, schemas, bundle, source, serve=serve, training=training
                )
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
        stored = await self.store.version(name, bundle.version)
        assert stored is not None
        return outcome, stored

    @property
    def _limit(self) -> int:
        return self.settings.bundle_limit

    # -- rollback, unpin, remove ---------------------------------------------------------

    async def rollback(self, name: str, version: str) -> None:
        """Serve a retained ``version`` until unpinned or redeployed."""
        async with self._locks[name]:
            outcome = await self.store.pin(name, version, time.time())
            if outcome == "no-function":
                raise not_found(name)
            if outcome == "no-version":
                retained = [v.version for v in await self.store.history(name)]
                raise VersionNotFoundError(
                    f"{name!r} retains no version {version!r}; it retains"
                    f" {', '.join(retained) or 'none'}"
                )
            log.info("function_pinned", function=name, version=version)
            await self.served.reload(name)

    async def unpin(self, name: str) -> None:
        """Serve the latest deploy again."""
        async with self._locks[name]:
            outcome = await self.store.unpin(name, time.time())
            if outcome == "no-function":
                raise not_found(name)
            if outcome == "unpinned":
                log.info("function_unpinned", function=name)
            await self.served.reload(name)

    async def remove(self, name: str) -> None:
        """Remove a function, however it was deployed (its work still runs)."""
        async with self._locks[name]:
            if not await self.store.remove(name):
                raise not_found(name)
            log.info("function_undeployed", function=name, because="DELETE /functions/{name}")
            await self.served.reload(name)
        await self._collect(name)

    # -- collection ----------------------------------------------------------------------

    async def collect(self) -> None:
        """Collect every function's versions past ``[store] keep_versions``."""
        for name in await self.store.stored_functions():
            await self._collect(name)

    async def _collect(self, name: str) -> None:
        collected, busy = await self.store.collect(name, self.settings.store.keep_versions)
        for version in collected:
            log.info("version_collected", function=name, version=version)
        if busy:
            log.info("versions_kept_in_use", function=name, versions=busy)

    async def collect_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.store.collect_interval)
            try:
                await self.collect()
            except ConveyorError as exc:
                log.warning("function_collection_failed", error=str(exc))
