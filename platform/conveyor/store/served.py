"""What an API process serves: the function store's states, followed as they change.

Every API process keeps the states (which version of each function serves, pinned or not,
its folder's error) and the serving versions' manifests and schemas in memory, so a request
reads no Redis to find its function. A change published on the functions channel reloads
that function; a (re)connected subscription reloads them all (see
:class:`~conveyor.store.deployer.Deployer`). The folder versions this process is still
inspecting show as ``loading``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from conveyor.errors import FunctionUnavailableError, VersionNotFoundError
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.registry import (
    FunctionEntry,
    FunctionSpec,
    Registry,
    not_found,
    require_serving,
)
from conveyor.store.db import FunctionStore, StoredFunction, StoredVersion

KEEP_OTHER_VERSIONS = 64  # versions other than the serving ones kept in memory (?version=)


class Served:
    """This process's view of the deployed functions."""

    def __init__(self, store: FunctionStore, folder: Registry | None = None) -> None:
        self.store = store
        self.folder = folder
        self._states: dict[str, StoredFunction] = {}
        self._versions: dict[tuple[str, str], StoredVersion] = {}
        self._entries: dict[str, FunctionEntry] = {}
        self._lock = asyncio.Lock()
        self.read = False  # the whole store read once: before, a name unknown here may exist

    # -- reading (no I/O) ----------------------------------------------------------------

    def entries(self) -> list[FunctionEntry]:
        names = set(self._entries)
        if self.folder is not None:
            names |= {e.name for e in self.folder.entries() if e.pending is not None}
        return [entry for name in sorted(names) if (entry := self.find(name)) is not None]

    def find(self, name: str) -> FunctionEntry | None:
        """``name`` as it serves, with a folder version this process is inspecting."""
        entry = self._entries.get(name)
        local = self.folder.find(name) if self.folder is not None else None
        if local is None or local.pending is None:
            return entry
        if entry is None:
            return FunctionEntry(name, local.path, pending=local.pending)
        return replace(entry, path=local.path, pending=local.pending)

    def entry(self, name: str) -> FunctionEntry:
        entry = self.find(name)
        if entry is None and not self.read:
            # a process just started (uvicorn replaces one that died) has not read the
            # store yet: the function may well exist, so not a 404
            raise FunctionUnavailableError(
                "this API process is still reading the function store: retry in a moment"
            )
        if entry is None:
            raise not_found(name)
        return entry

    def serving(self, name: str) -> FunctionEntry:
        return require_serving(self.entry(name))

    def state(self, name: str) -> StoredFunction | None:
        return self._states.get(name)

    # -- a retained version --------------------------------------------------------------

    async def version(self, name: str, version: str) -> tuple[FunctionSpec, FunctionSchemas]:
        """A retained version of ``name`` to run (``?version=``), or why there is none."""
        entry = self.entry(name)
        if entry.spec is not None and entry.spec.version == version and entry.schemas:
            return entry.spec, entry.schemas
        stored = self._versions.get((name, version)) or await self.store.version(name, version)
        if stored is None or stored.manifest is None or stored.schemas is None:
            retained = [v.version for v in await self.store.history(name)]
            raise VersionNotFoundError(
                f"{name!r} has no version {version!r}; it retains"
                f" {', '.join(retained) or 'none'} (GET /functions/{name}/versions)"
            )
        self._remember(stored)
        return FunctionSpec(name, version, None, stored.manifest), stored.schemas

    # -- following the store -------------------------------------------------------------

    async def reload(self, name: str | None = None) -> None:
        """Read one function's state (or all) and the versions they serve."""
        async with self._lock:
            if name is None:
                states = await self.store.states()
            else:
                states = dict(self._states)
                state = await self.store.state(name)
                if state is None:
                    states.pop(name, None)
                else:
                    states[name] = state
            for state in states.values():
                if state.serving and (state.name, state.serving) not in self._versions:
                    stored = await self.store.version(state.name, state.serving)
                    if stored is not None:
                        self._remember(stored)
            self._states = states
            self._entries = {n: self._build(s) for n, s in states.items()}
            self.read = self.read or name is None

    def _build(self, state: StoredFunction) -> FunctionEntry:
        local = self.folder.find(state.name) if self.folder is not None else None
        stored = self._versions.get((state.name, state.serving or ""))
        spec = schemas = None
        if stored is not None and stored.manifest is not None:
            spec = FunctionSpec(state.name, stored.version, None, stored.manifest)
            schemas = stored.schemas
        return FunctionEntry(
            state.name,
            local.path if local is not None else None,
            spec,
            schemas,
            error=state.error,
            error_version=state.error_version,
            pinned=state.pinned is not None,
        )

    def _remember(self, stored: StoredVersion) -> None:
        self._versions[(stored.name, stored.version)] = stored
        if len(self._versions) > len(self._states) + KEEP_OTHER_VERSIONS:
            serving = {(s.name, s.serving) for s in self._states.values()}
            self._versions = {k: v for k, v in self._versions.items() if k in serving}
            self._versions[(stored.name, stored.version)] = stored
