"""The functions a worker pool child runs: found on its disk, imported one at a time, and
only once their import is known to end well.

A module that hangs, exits or crashes at import must cost its own invocations only. So a
child imports a version in its own process only after it has been *vetted*: the API's
inspector found its schemas (Redis holds them by version digest; a version the API
accepted is always there), or, for a version only this machine has, this child runs the
same inspector subprocess first, with the same limits, and records what it found. A
version that fails is rejected in the registry: its invocations fail with that error,
and the last good version (if this process has it) keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis

from conveyor.errors import ConveyorError, FunctionLoadError
from conveyor.functions.inspector import Inspector, Limits
from conveyor.functions.loader import FunctionSchemas, LoadedFunction
from conveyor.functions.registry import FunctionSpec, Registry
from conveyor.log import get_logger
from conveyor.queueing import keys
from conveyor.queueing.schema_cache import TTL
from conveyor.settings import Settings

log = get_logger(__name__)

Outcome = FunctionSchemas | FunctionLoadError


class LocalFunctions:
    """One pool child's registry of function code."""

    def __init__(self, settings: Settings, client: Callable[[], redis.Redis]) -> None:
        self.settings = settings
        self._client = client  # the executor's connection (re-made in each child)
        self.registry = Registry(settings.functions.dir, settings.queues, import_code=True)
        self._superseded: dict[str, set[str]] = {}
        self._limits = Limits(settings.functions.inspect_timeout, settings.functions.inspect_memory)

    def preload(self, queues: list[str]) -> list[LoadedFunction]:
        """Import every vetted function on ``queues``; the others wait for an invocation."""
        ours = [s for s in self.registry.scan().candidates if s.manifest.target_queue in queues]
        good = self._vet(ours)
        return [
            loaded for spec in good if (loaded := self.registry.load(spec.name).loaded) is not None
        ]

    def load(self, name: str, version: str) -> LoadedFunction:
        """The version to run: rescan the folders when a message names a version we have
        not seen (a deploy the API saw before us, or a function new to us), and import
        that one function if its folder changed."""
        try:
            entry = self.registry.entry(name)
            known = entry.spec is not None and entry.spec.version == version
        except ConveyorError:
            known = False
        if not known and version not in self._superseded.get(name, set()):
            self.registry.scan()
            self._superseded.setdefault(name, set()).add(version)
        pending = self.registry.entry(name).pending
        if pending is not None and self._vet([pending]):
            self.registry.load(name)
        loaded = self.registry.serving(name).loaded
        assert loaded is not None
        return loaded

    def _vet(self, specs: list[FunctionSpec]) -> list[FunctionSpec]:
        """The specs whose import is known to end well; the others are rejected."""
        known = self._inspected(specs)
        unknown = [s for s in specs if s.version not in known]
        if unknown:
            outcomes = asyncio.run(self._inspect(unknown))
            for spec, outcome in zip(unknown, outcomes, strict=True):
                if isinstance(outcome, FunctionLoadError):
                    self.registry.reject(spec, str(outcome))
                else:
                    known.add(spec.version)
                    self._record(spec.version, outcome)
        return [s for s in specs if s.version in known]

    async def _inspect(
        self, specs: list[FunctionSpec]
    ) -> list[FunctionSchemas | FunctionLoadError]:
        inspector = Inspector(self._limits)

        async def one(spec: FunctionSpec) -> FunctionSchemas | FunctionLoadError:
            try:
                return await inspector.inspect(spec)
            except FunctionLoadError as exc:
                return exc

        return list(await asyncio.gather(*(one(s) for s in specs)))

    def _inspected(self, specs: list[FunctionSpec]) -> set[str]:
        try:
            with self._client().pipeline(transaction=False) as pipe:
                for spec in specs:
                    pipe.exists(keys.schemas(spec.version))
                found = pipe.execute()
        except redis.RedisError as exc:
            log.warning("schema_cache_unavailable", error=str(exc))
            return set()
        return {spec.version for spec, exists in zip(specs, found, strict=True) if exists}

    def _record(self, version: str, schemas: FunctionSchemas) -> None:
        try:
            self._client().set(keys.schemas(version), schemas.to_json(), ex=TTL)
        except redis.RedisError as exc:
            log.warning("schema_cache_unavailable", error=str(exc))
