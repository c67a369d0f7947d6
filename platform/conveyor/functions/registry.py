"""The registry: which functions exist, which version of each serves, and why one is broken.

A version is a digest of everything in the folder (manifest, code, assets). A folder whose
newest version is broken is listed with its error, and its last good version keeps serving
until a good one replaces it. The registry can work without importing code (the worker's
supervising parent, which must never import torch) or with it (the API and worker
children). :meth:`Registry.refresh` is called by the watcher; readers see whole snapshots.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from conveyor.errors import (
    ConveyorError,
    FunctionNotFoundError,
    FunctionUnavailableError,
)
from conveyor.functions.loader import LoadedFunction, load_function, unload
from conveyor.functions.manifest import MANIFEST_FILE, NAME_PATTERN, Manifest, parse_manifest
from conveyor.log import get_logger
from conveyor.settings import QueueSettings

log = get_logger(__name__)

VERSION_LENGTH = 12


@dataclass(frozen=True)
class FunctionSpec:
    """One version of a function folder whose manifest is valid."""

    name: str
    version: str
    path: Path
    manifest: Manifest


@dataclass(frozen=True)
class FunctionEntry:
    """What the registry knows of one folder."""

    name: str
    path: Path
    spec: FunctionSpec | None = None  # the version that serves (the last good one)
    loaded: LoadedFunction | None = None  # its imported code, when the registry imports
    error: str | None = None  # why the newest version on disk cannot serve
    error_version: str | None = None

    @property
    def status(self) -> Literal["ready", "error"]:
        return "ready" if self.error is None else "error"


@dataclass(frozen=True)
class Change:
    name: str
    action: Literal["added", "updated", "removed", "failed"]
    version: str | None
    error: str | None = None


class Registry:
    """Function folders under ``root``, validated against the deployment's queues."""

    def __init__(
        self, root: Path, queues: Mapping[str, QueueSettings], *, import_code: bool
    ) -> None:
        self.root = root
        self.queues = queues
        self.import_code = import_code
        self._entries: dict[str, FunctionEntry] = {}
        self._digests = _DigestCache()
        self._lock = threading.Lock()

    def entries(self) -> list[FunctionEntry]:
        return sorted(self._entries.values(), key=lambda e: e.name)

    def entry(self, name: str) -> FunctionEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise FunctionNotFoundError(f"no function named {name!r} is deployed") from None

    def serving(self, name: str) -> FunctionEntry:
        """The entry of ``name`` if it has a version to serve."""
        entry = self.entry(name)
        if entry.spec is None or (self.import_code and entry.loaded is None):
            raise FunctionUnavailableError(
                f"function {name!r} has no good version to serve: {entry.error}"
            )
        return entry

    def refresh(self) -> list[Change]:
        """Rescan ``root``; (re)load changed folders; return what changed."""
        with self._lock:
            folders = self._folders()
            changes = []
            entries = dict(self._entries)
            for name in set(entries) - set(folders):
                old = entries.pop(name)
                if old.loaded is not None:
                    unload(old.loaded.package)
                changes.append(Change(name, "removed", old.spec.version if old.spec else None))
            for name, path in folders.items():
                change = self._refresh_one(entries, name, path)
                if change is not None:
                    changes.append(change)
            self._entries = entries
        for change in changes:
            if change.error is None:
                log.info(f"function_{change.action}", function=change.name, version=change.version)
            else:
                log.warning(
                    "function_failed",
                    function=change.name,
                    version=change.version,
                    error=change.error,
                )
        return changes

    def _folders(self) -> dict[str, Path]:
        if not self.root.is_dir():
            return {}
        return {
            p.name: p
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith((".", "_"))
        }

    def _refresh_one(
        self, entries: dict[str, FunctionEntry], name: str, path: Path
    ) -> Change | None:
        old = entries.get(name) or FunctionEntry(name, path)
        try:
            version = self._digests.folder(path)
        except OSError as exc:
            version = f"unreadable:{exc}"
        current = old.spec.version if old.spec else None
        if version in (current, old.error_version):
            return None
        try:
            if not re.match(NAME_PATTERN, name):
                raise ConveyorError(f"{path}: folder name must match {NAME_PATTERN}")
            manifest = parse_manifest(path / MANIFEST_FILE, self.queues)
            spec = FunctionSpec(name, version, path, manifest)
            loaded = load_function(name, version, path, manifest) if self.import_code else None
        except ConveyorError as exc:
            entries[name] = replace(old, error=str(exc), error_version=version)
            return Change(name, "failed", version, str(exc))
        if old.loaded is not None:
            unload(old.loaded.package)
        entries[name] = FunctionEntry(name, path, spec, loaded)
        return Change(name, "updated" if current else "added", version)


class _DigestCache:
    """Folder digests, rehashing only files whose size or mtime changed."""

    def __init__(self) -> None:
        self._files: dict[Path, tuple[int, int, bytes]] = {}

    def folder(self, path: Path) -> str:
        digest = hashlib.sha256()
        for file in sorted(_files(path)):
            digest.update(str(file.relative_to(path)).encode() + b"\0")
            digest.update(self._file(file))
        return digest.hexdigest()[:VERSION_LENGTH]

    def _file(self, file: Path) -> bytes:
        stat = file.stat()
        cached = self._files.get(file)
        if cached and cached[:2] == (stat.st_size, stat.st_mtime_ns):
            return cached[2]
        digest = hashlib.sha256(file.read_bytes()).digest()
        self._files[file] = (stat.st_size, stat.st_mtime_ns, digest)
        return digest


def _files(path: Path) -> list[Path]:
    found = []
    for item in path.rglob("*"):
        rel = item.relative_to(path).parts
        if any(part.startswith(".") or part == "__pycache__" for part in rel):
            continue
        if item.is_file() and item.suffix not in (".pyc", ".pyo"):
            found.append(item)
    return found
