"""The API's functions folder: the registry, with each new version checked by the inspector.

:meth:`Catalog.refresh` scans the folders (no user code) and starts one check per new
version, each on its own: a folder whose import hangs is ``loading`` until its time limit
while every other folder is checked, served and hot-reloaded as usual. Each change (a
version accepted or rejected, a folder removed) is handed to a listener: the API's
deployer, which puts good versions in the function store. A version the store already
holds is not inspected again (:class:`SchemaCache`), so restarts and further processes
read its schemas instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from conveyor.errors import BrokerUnavailableError, FunctionLoadError
from conveyor.functions.inspector import Inspects
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.registry import Change, FunctionSpec, Registry
from conveyor.log import get_logger

log = get_logger(__name__)


class SchemaCache(Protocol):
    """Schemas of versions that inspected well (the function store's)."""

    async def schemas(self, name: str, version: str) -> FunctionSchemas | None: ...


Listener = Callable[[Change], Awaitable[None]]


class Prepares(Protocol):
    """What resolves a version's own environment before it is inspected (its manifest
    given the environment's id), or raises a FunctionLoadError naming the package."""

    async def prepare(self, spec: FunctionSpec) -> FunctionSpec: ...


class Catalog:
    """Keeps ``registry`` current without importing user code in this process."""

    def __init__(
        self,
        registry: Registry,
        inspector: Inspects,
        cache: SchemaCache | None = None,
        listener: Listener | None = None,
        environments: Prepares | None = None,
    ) -> None:
        self.registry = registry
        self.environments = environments
        self.inspector = inspector
        self.cache = cache
        self.listener = listener
        self._checks: dict[str, asyncio.Task[None]] = {}
        self._changes = 0  # functions accepted or removed so far (a pipeline's check reads it)

    async def refresh(self) -> None:
        """Rescan the folders; start checking every new version (without waiting)."""
        scan = await asyncio.to_thread(self.registry.scan)
        for change in scan.changes:
            if change.action == "removed":
                self._cancel(change.name)
            await self._tell(change)
        for spec in scan.candidates:
            self._start(spec)

    def _start(self, spec: FunctionSpec) -> None:
        self._cancel(spec.name)  # a newer version replaces the one being checked
        task = asyncio.create_task(self._check(spec), name=f"conveyor-inspect-{spec.name}")
        self._checks[spec.name] = task
        task.add_done_callback(functools.partial(self._forget, spec.name))

    async def _functions_checked(self) -> None:
        """Wait for the checks of functions that are not pipelines: a pipeline is checked
        against the functions it names, once they are deployed."""
        others = [
            task
            for name, task in self._checks.items()
            if (entry := self.registry.find(name)) is not None
            and entry.pending is not None
            and not entry.pending.manifest.is_pipeline
        ]
        if others:
            await asyncio.wait(others)

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

    async def _check(self, pending: FunctionSpec) -> None:
        if pending.manifest.is_pipeline:
            await self._functions_checked()
        try:
            spec = await self._prepared(pending)
        except FunctionLoadError as exc:
            await self._tell(self.registry.reject(pending, str(exc)))
            return
        # a pipeline is checked again: the functions it names may have changed
        schemas = None if spec.manifest.is_pipeline else await self._cached(spec)
        if schemas is not None:
            log.info("function_schemas_cached", function=spec.name, version=spec.version)
        else:
            started = time.monotonic()
            try:
                schemas = await self._inspect(spec)
            except FunctionLoadError as exc:
                await self._tell(self.registry.reject(pending, str(exc)))
                return
            except Exception as exc:  # the inspector itself failed (fork, pipes)
                log.exception("function_inspection_failed", function=spec.name)
                error = f"{spec.name}: could not be inspected: {exc!r}"
                await self._tell(self.registry.reject(pending, error))
                return
            log.info(
                "function_inspected",
                function=spec.name,
                version=spec.version,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )
        await self._tell(self.registry.accept(pending, schemas, spec))

    async def _prepared(self, spec: FunctionSpec) -> FunctionSpec:
        if self.environments is None or spec.manifest.environment is None:
            return spec
        return await self.environments.prepare(spec)

    async def _inspect(self, spec: FunctionSpec) -> FunctionSchemas:
        """``spec``'s schemas; a pipeline found wrong while another function changed is
        checked again (it may name that one, deployed meanwhile)."""
        while True:
            seen = self._changes
            try:
                return await self.inspector.inspect(spec)
            except FunctionLoadError:
                if not spec.manifest.is_pipeline or self._changes == seen:
                    raise

    async def _tell(self, change: Change | None) -> None:
        if change is not None and self.listener is not None:
            await self.listener(change)
        if change is not None and change.action != "failed":
            self._changes += 1
            for spec in self.registry.retry_pipelines():  # one may name what changed
                self._start(spec)

    async def _cached(self, spec: FunctionSpec) -> FunctionSchemas | None:
        if self.cache is None:
            return None
        try:
            return await self.cache.schemas(spec.name, spec.version)
        except BrokerUnavailableError as exc:  # Redis away: inspect instead
            log.warning("function_store_unavailable", error=str(exc))
            return None
