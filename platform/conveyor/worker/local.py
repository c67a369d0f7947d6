"""The function code a worker pool child runs: exactly the version each invocation names.

Versions come from the function store (:mod:`conveyor.store.db`), never
from this machine's functions folder: the first time the machine meets a version, it is
fetched and unpacked into the version cache (:mod:`conveyor.store.cache`), once for all
its worker processes, and the child imports it from there. The API that stored a version
had it inspected, so its import is known to end. A child keeps one version of each
function imported; an invocation of another version (``?version=``, or work queued before
a deploy) imports that one in its place, and a class handler's ``setup()`` runs again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis

from conveyor.errors import ConveyorError, EnvironmentResolveError, FunctionUnavailableError
from conveyor.functions.loader import LoadedFunction, load_function, unload
from conveyor.log import get_logger
from conveyor.settings import Settings
from conveyor.store.bucket import BucketBundles
from conveyor.store.cache import VersionCache
from conveyor.store.db import StoreReader
from conveyor.worker.environments import environment_failure

log = get_logger(__name__)


class LocalFunctions:
    """One pool child's imported function code, by function name."""

    def __init__(self, settings: Settings, client: Callable[[], redis.Redis]) -> None:
        # the executor's connection (re-made in each child); large bundles from the bucket
        self.reader = StoreReader(client, BucketBundles.of(settings))
        self.cache = VersionCache(settings.store.cache_dir)
        self._loaded: dict[str, LoadedFunction] = {}

    def preload(self, queues: list[str]) -> list[LoadedFunction]:
        """Import the serving version of every function on ``queues``; one that fails
        is logged here and fails its own invocations when they come."""
        loaded = []
        for name, (version, manifest) in self.reader.serving().items():
            if manifest.target_queue not in queues or manifest.is_pipeline:
                continue  # a pipeline has no code: its steps are other functions
            try:
                loaded.append(self.load(name, version))
            except ConveyorError as exc:
                log.error("function_preload_failed", function=name, version=version, error=str(exc))
        return loaded

    def load(self, name: str, version: str, *, training: bool = False) -> LoadedFunction:
        """``version`` of ``name``, imported (fetched from the store first if need be);
        ``training``: its ``[training]`` handler, under the manifest a training runs with."""
        if (failure := environment_failure()) is not None:
            raise EnvironmentResolveError(f"{name}: its [environment] cannot run here: {failure}")
        key = f"{name} training" if training else name
        current = self._loaded.get(key)
        if current is not None and current.version == version:
            return current
        manifest = self.reader.manifest(name, version)
        folder = self.folder(name, version) if manifest is not None else None
        if manifest is None or folder is None:
            raise FunctionUnavailableError(
                f"version {version} of {name!r} is not in the function store (collected, or"
                " Redis lost it): this invocation cannot run it"
            )
        if training:
            if manifest.training is None:
                raise FunctionUnavailableError(
                    f"version {version} of {name!r} has no [training] table: it cannot train"
                )
            manifest = manifest.for_training()
        loaded = load_function(name, version, folder, manifest)
        if current is not None:
            unload(current.package)
        self._loaded[key] = loaded
        log.info("function_loaded", function=name, version=version, folder=str(folder))
        return loaded

    def folder(self, name: str, version: str) -> Path | None:
        """Where ``version``'s files are on this machine (unpacked from the store first;
        checked: another process may have written into it)."""
        try:
            return self.cache.verified(name, version, lambda: self.reader.bundle(name, version))
        except OSError as exc:
            raise FunctionUnavailableError(
                f"{name} {version}: cannot unpack it into {self.cache.root} ([store]"
                f" cache_dir): {exc}"
            ) from exc
