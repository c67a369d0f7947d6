"""The registry: which functions exist, which version of each serves, and why one is broken.

A version is a digest of everything in the folder (manifest, code, assets). Finding a new
version is two steps: :meth:`Registry.scan` reads the folders and manifests (no user code)
and marks each new version ``loading``; then its code is checked and the version is
:meth:`~Registry.accept`-ed or :meth:`~Registry.reject`-ed. Who checks is the caller's
choice: the API asks an inspector subprocess (:mod:`conveyor.functions.catalog`), a worker
pool child imports the code itself (:meth:`Registry.load`), a worker's supervising parent
takes the manifest alone (:meth:`Registry.refresh` without ``import_code``).

A folder whose newest version is broken is listed with its error, and its last good version
keeps serving until a good one replaces it. Readers see whole snapshots.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from conveyor.errors import (
    ConveyorError,
    FunctionLoadError,
    FunctionNotFoundError,
    FunctionUnavailableError,
)
from conveyor.functions.loader import FunctionSchemas, LoadedFunction, load_function, unload
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
    schemas: FunctionSchemas | None = None  # its input and output schemas, once checked
    loaded: LoadedFunction | None = None  # its imported code, where the registry imports
    pending: FunctionSpec | None = None  # a newer version whose code is being checked
    error: str | None = None  # why the newest version on disk cannot serve
    error_version: str | None = None

    @property
    def status(self) -> Literal["ready", "loading", "error"]:
        if self.pending is not None:
            return "loading"
        return "ready" if self.error is None else "error"


@dataclass(frozen=True)
class Change:
    name: str
    action: Literal["added", "updated", "removed", "failed"]
    version: str | None
    error: str | None = None


@dataclass
class Scan:
    """What one look at the folders found: versions to check, and changes already made."""

    candidates: list[FunctionSpec] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


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
        if entry.spec is not None:
            return entry
        if entry.pending is not None:
            raise FunctionUnavailableError(
                f"function {name!r} is being loaded (version {entry.pending.version});"
                " retry in a moment"
            )
        raise FunctionUnavailableError(f"function {name!r} has no good version: {entry.error}")

    def version_on_disk(self, path: Path) -> str:
        """The digest of a folder as it is now."""
        return self._digests.folder(path)

    # -- finding versions ----------------------------------------------------------------

    def scan(self) -> Scan:
        """Rescan ``root`` without running any user code: drop removed folders, record bad
        manifests, and mark each new version with a valid manifest ``loading``; they are
        returned for their code to be checked."""
        scan = Scan()
        with self._lock:
            folders = self._folders()
            entries = dict(self._entries)
            for name in set(entries) - set(folders):
                old = entries.pop(name)
                if old.loaded is not None:
                    unload(old.loaded.package)
                version = old.spec.version if old.spec else None
                scan.changes.append(Change(name, "removed", version))
            for name, path in folders.items():
                self._scan_one(entries, name, path, scan)
            self._entries = entries
        for change in scan.changes:
            _log(change)
        return scan

    def accept(
        self,
        spec: FunctionSpec,
        schemas: FunctionSchemas | None = None,
        loaded: LoadedFunction | None = None,
    ) -> Change | None:
        """``spec``'s code checked out: it serves now. None if a newer scan superseded it."""
        with self._lock:
            old = self._entries.get(spec.name)
            if old is None or old.pending != spec:
                return None
            if old.loaded is not None:
                unload(old.loaded.package)
            self._entries = {
                **self._entries,
                spec.name: FunctionEntry(spec.name, spec.path, spec, schemas, loaded),
            }
        change = Change(spec.name, "updated" if old.spec else "added", spec.version)
        _log(change)
        return change

    def reject(self, spec: FunctionSpec, error: str) -> Change | None:
        """``spec``'s code is broken: the last good version (if any) keeps serving."""
        with self._lock:
            old = self._entries.get(spec.name)
            if old is None or old.pending != spec:
                return None
            entry = replace(old, pending=None, error=error, error_version=spec.version)
            self._entries = {**self._entries, spec.name: entry}
        change = Change(spec.name, "failed", spec.version, error)
        _log(change)
        return change

    def load(self, name: str) -> FunctionEntry:
        """Import ``name``'s pending version in this process (a worker pool child), so that
        only the function an invocation needs is ever imported; then its entry."""
        entry = self.entry(name)
        if entry.pending is not None:
            self._import(entry.pending)
        return self.entry(name)

    def refresh(self) -> list[Change]:
        """Rescan and settle every new version here: imported with ``import_code``, else
        on its manifest alone (processes that must never import user code)."""
        scan = self.scan()
        changes = list(scan.changes)
        for spec in scan.candidates:
            change = self._import(spec) if self.import_code else self.accept(spec)
            if change is not None:
                changes.append(change)
        return changes

    def _import(self, spec: FunctionSpec) -> Change | None:
        try:
            loaded = load_function(spec.name, spec.version, spec.path, spec.manifest)
            schemas = loaded.schemas()
        except FunctionLoadError as exc:
            return self.reject(spec, str(exc))
        except Exception as exc:  # pydantic could not write the schemas down
            return self.reject(spec, f"{spec.path}: its types have no JSON Schema: {exc}")
        change = self.accept(spec, schemas, loaded)
        if change is None:
            unload(loaded.package)
        return change

    def _folders(self) -> dict[str, Path]:
        if not self.root.is_dir():
            return {}
        return {
            p.name: p
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith((".", "_"))
        }

    def _scan_one(
        self, entries: dict[str, FunctionEntry], name: str, path: Path, scan: Scan
    ) -> None:
        old = entries.get(name) or FunctionEntry(name, path)
        try:
            version = self._digests.folder(path)
        except OSError as exc:
            version = f"unreadable:{exc}"
        if old.spec is not None and version == old.spec.version:
            if old.pending is not None or old.error is not None:  # reverted to what serves
                entries[name] = replace(old, pending=None, error=None, error_version=None)
            return
        if version in (old.error_version, old.pending and old.pending.version):
            return
        try:
            if not re.match(NAME_PATTERN, name):
                raise ConveyorError(f"{path}: folder name must match {NAME_PATTERN}")
            manifest = parse_manifest(path / MANIFEST_FILE, self.queues)
        except ConveyorError as exc:
            entries[name] = replace(old, pending=None, error=str(exc), error_version=version)
            scan.changes.append(Change(name, "failed", version, str(exc)))
            return
        spec = FunctionSpec(name, version, path, manifest)
        entries[name] = replace(old, pending=spec, error=None, error_version=None)
        scan.candidates.append(spec)


def _log(change: Change) -> None:
    if change.error is None:
        log.info(f"function_{change.action}", function=change.name, version=change.version)
    else:
        log.warning(
            "function_failed", function=change.name, version=change.version, error=change.error
        )


class _DigestCache:
    """Folder digests, rehashing only files whose size or mtime changed."""

    def __init__(self) -> None:
        self._files: dict[Path, tuple[int, int, bytes]] = {}
        self._lock = threading.Lock()

    def folder(self, path: Path) -> str:
        digest = hashlib.sha256()
        for file in sorted(_files(path)):
            digest.update(str(file.relative_to(path)).encode() + b"\0")
            digest.update(self._file(file))
        return digest.hexdigest()[:VERSION_LENGTH]

    def _file(self, file: Path) -> bytes:
        stat = file.stat()
        with self._lock:
            cached = self._files.get(file)
        if cached and cached[:2] == (stat.st_size, stat.st_mtime_ns):
            return cached[2]
        digest = hashlib.sha256(file.read_bytes()).digest()
        with self._lock:
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
