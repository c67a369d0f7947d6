"""Inspecting a pipeline: its steps checked against the functions deployed, no subprocess.

A pipeline has no code to import: its schemas are its steps' (the first's input, the
selected step's output), and what :func:`~conveyor.pipelines.steps.check_pipeline` finds
wrong is its error, as an import error is a function's. :class:`PipelineInspector` stands
in for the inspector wherever versions are checked (the folder's catalog, a ``PUT``
deploy) and hands every other function to it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor.errors import FunctionLoadError
from conveyor.functions.inspector import Inspects
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.manifest import MANIFEST_FILE, Manifest
from conveyor.functions.registry import FunctionSpec, Registry
from conveyor.pipelines.steps import Known, check_pipeline
from conveyor.store.db import FunctionStore

MAX_KNOWN = 256  # functions a check reads, following pipelines within pipelines

Deployed = Callable[[str], Awaitable[tuple[Manifest, FunctionSchemas] | None]]


def store_lookup(store: FunctionStore) -> Deployed:
    """The serving version of a function in the function store, as a check sees it."""

    async def deployed(name: str) -> tuple[Manifest, FunctionSchemas] | None:
        state = await store.state(name)
        if state is None or state.serving is None:
            return None
        stored = await store.version(name, state.serving)
        if stored is None or stored.manifest is None or stored.schemas is None:
            return None
        return stored.manifest, stored.schemas

    return deployed


def registry_lookup(registry: Registry) -> Deployed:
    """The functions of a folder registry that checked well (``conveyor check``)."""

    async def deployed(name: str) -> tuple[Manifest, FunctionSchemas] | None:
        entry = registry.find(name)
        if entry is None or entry.spec is None or entry.schemas is None:
            return None
        return entry.spec.manifest, entry.schemas

    return deployed


class PipelineInspector:
    """Checks a pipeline against ``deployed``; any other version goes to ``inspector``."""

    def __init__(self, inspector: Inspects, deployed: Deployed) -> None:
        self.inspector = inspector
        self.deployed = deployed

    async def inspect(self, spec: FunctionSpec) -> FunctionSchemas:
        if not spec.manifest.is_pipeline:
            return await self.inspector.inspect(spec)
        where = str(spec.path / MANIFEST_FILE) if spec.path else f"{spec.name}/{MANIFEST_FILE}"
        known = await self._known(spec.manifest)
        return check_pipeline(spec.name, spec.manifest, where, known.get, _input_schema(spec))

    async def _known(self, manifest: Manifest) -> dict[str, Known]:
        """Every function the steps name, and those of the pipelines among them."""
        assert manifest.steps is not None
        todo = [step.function for step in manifest.steps]
        known: dict[str, Known] = {}
        seen: set[str] = set()
        while todo and len(seen) < MAX_KNOWN:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            found = await self.deployed(name)
            if found is None:
                continue
            inner, schemas = found
            names = tuple(step.function for step in inner.steps or ())
            known[name] = Known(schemas, names)
            todo.extend(names)
        return known


def _input_schema(spec: FunctionSpec) -> dict[str, Any] | None:
    """``[pipeline] input_schema``: a table, or a JSON file in the folder."""
    declared = spec.manifest.pipeline.input_schema if spec.manifest.pipeline else None
    if declared is None or isinstance(declared, dict):
        return declared
    path = spec.folder / declared
    try:
        schema = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FunctionLoadError(f"{path}: [pipeline] input_schema cannot be read: {exc}") from None
    if not isinstance(schema, dict):
        raise FunctionLoadError(f"{path}: [pipeline] input_schema must be a JSON object")
    return schema
