"""The API's functions: the registry, with each new version checked by the inspector.

:meth:`Catalog.refresh` scans the folders (no user code) and starts one check per new
version, each on its own: a folder whose import hangs is ``loading`` until its time limit
while every other folder is checked, served and hot-reloaded as usual. A version checked
once is known by its digest to every API process through the :class:`SchemaCache`
(Redis), so restarts and further processes do not inspect it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Protocol

from conveyor.errors import BrokerUnavailableError, FunctionLoadError
from conveyor.functions.inspector import Inspector
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.registry import FunctionSpec, Registry
from conveyor.log import get_logger

log = get_logger(__name__)


class SchemaCache(Protocol):
    """Schemas of versions that inspected well, by version digest."""

    async def get(self, version: str) -> FunctionSchemas | None: ...

    async def put(self, version: str, schemas: FunctionSchemas) -> None: ...


class Catalog:
    """Keeps ``registry`` current without importing user code in this process."""

    def __init__(
        self, registry: Registry, inspector: Inspector, cache: SchemaCache | None = None
    ) -> None:
        self.registry = registry
        self.inspector = inspector
        self.cache = cache
        self._checks: dict[str, asyncio.Task[None]] = {}

    async def refresh(self) -> None:
        """Rescan the folders; start checking every new version (without waiting)."""
        scan = await asyncio.to_thread(self.registry.scan)
        for change in scan.changes:
            if change.action == "removed":
                self._cancel(change.name)
        for spec in scan.candidates:
            self._cancel(spec.name)  # a newer version replaces the one being checked
            task = asyncio.create_task(self._check(spec), name=f"conveyor-inspect-{spec.name}")
            self._checks[spec.name] = task
            task.add_done_callback(functools.partial(self._forget, spec.name))

    async def settled(self) -> None:
        """Wait until no check is running (those started meanwhile included)."""
        while self._checks:
            await asyncio.wait(list(self._checks.values()))

    async def close(self) -> None:
        tasks = list(self._checks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _cancel(self, name: str) -> None:
        task = self._checks.pop(name, None)
        if task is not None:
            task.cancel()

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._checks.get(name) is task:
            del self._checks[name]

    async def _check(self, spec: FunctionSpec) -> None:
        schemas = await self._cached(spec.version)
        if schemas is not None:
            log.info("function_schemas_cached", function=spec.name, version=spec.version)
        else:
            started = time.monotonic()
            try:
                schemas = await self.inspector.inspect(spec)
            except FunctionLoadError as exc:
                self.registry.reject(spec, str(exc))
                return
            except Exception as exc:  # the inspector itself failed (fork, pipes)
                log.exception("function_inspection_failed", function=spec.name)
                self.registry.reject(spec, f"{spec.name}: could not be inspected: {exc!r}")
                return
            log.info(
                "function_inspected",
                function=spec.name,
                version=spec.version,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )
            if await self._unchanged(spec):  # else the schemas may be a newer copy's
                await self._store(spec.version, schemas)
        self.registry.accept(spec, schemas)

    async def _unchanged(self, spec: FunctionSpec) -> bool:
        try:
            now = await asyncio.to_thread(self.registry.version_on_disk, spec.path)
        except OSError:
            return False
        return now == spec.version

    async def _cached(self, version: str) -> FunctionSchemas | None:
        if self.cache is None:
            return None
        try:
            return await self.cache.get(version)
        except BrokerUnavailableError as exc:  # Redis away: inspect instead
            log.warning("schema_cache_unavailable", error=str(exc))
            return None

    async def _store(self, version: str, schemas: FunctionSchemas) -> None:
        if self.cache is None:
            return
        try:
            await self.cache.put(version, schemas)
        except BrokerUnavailableError as exc:
            log.warning("schema_cache_unavailable", error=str(exc))
