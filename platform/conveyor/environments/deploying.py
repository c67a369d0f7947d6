"""The API's side of environments at deploy: a version's requirements resolved into a lock,
the lock built on this machine (the inspector imports the version in it), and the version's
manifest given the environment's id. Whatever fails is a deploy error naming the package
(:class:`~conveyor.errors.EnvironmentResolveError`); the last good version keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from conveyor.environments.build import LOCK_FILE, Environments
from conveyor.environments.requirements import requirement_lines
from conveyor.environments.resolve import resolve
from conveyor.functions.registry import FunctionSpec
from conveyor.log import get_logger

log = get_logger(__name__)


class Preparer:
    """Resolves and builds the environments of versions deployed through this process."""

    def __init__(self, cache_dir: Path, uv_cache: Path | None = None) -> None:
        self.environments = Environments(cache_dir, uv_cache)

    def interpreter(
        self, environment_id: str, environ: Mapping[str, str]
    ) -> tuple[str, dict[str, str]]:
        """The environment's Python, and ``environ`` as its processes get it."""
        python = str(self.environments.python(environment_id))
        return python, self.environments.process_environ(environment_id, environ)

    async def prepare(self, spec: FunctionSpec) -> FunctionSpec:
        """``spec`` with its environment resolved and built here (unchanged without one)."""
        section = spec.manifest.environment
        if section is None:
            return spec
        lines = requirement_lines(spec.folder, section)
        lock = await asyncio.to_thread(resolve, lines, self.environments.uv_cache)
        await asyncio.to_thread(self.environments.ensure, lock.id, lock.text)
        log.info("environment_resolved", function=spec.name, environment=lock.id)
        return replace(spec, manifest=spec.manifest.with_environment(lock.id))

    def lock(self, environment_id: str) -> str:
        """A built environment's lock (what the function store keeps for other machines)."""
        return (self.environments.folder(environment_id) / LOCK_FILE).read_text()
