"""The functions folder: which function folders exist, their versions, and why one is broken.

A version is a digest of everything in the folder (manifest, code, assets). Finding a new
version is two steps: :meth:`Registry.scan` reads the folders and manifests (no user code)
and marks each new version ``loading``; then its code is checked and the version is
:meth:`~Registry.accept`-ed or :meth:`~Registry.reject`-ed. The API checks it in an
inspector subprocess (:mod:`conveyor.functions.catalog`) and deploys the good ones to the
function store; :meth:`Registry.refresh` accepts on the manifest alone (``conveyor check``
without inspection, tests). No process imports user code from here: workers run versions
from the store (:mod:`conveyor.worker.local`).

A folder whose newest version is broken is listed with its error, and its last good version
keeps serving until a good one replaces it. Readers see whole snapshots.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from conveyor.errors import (
    ConveyorError,
    FunctionNotFoundError,
    FunctionUnavailableError,
)
from conveyor.functions.digest import DigestCache
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.manifest import MANIFEST_FILE, NAME_PATTERN, Manifest, parse_manifest
from conveyor.log import get_logger
from conveyor.settings import QueueSettings

log = get_logger(__name__)


@dataclass(frozen=True)
class FunctionSpec:
    """One version of a function whose manifest is valid: on this disk (``path``, a folder
    or an unpacked push), or known from the function store only (``path`` None)."""

    name: str
    version: str
    path: Path | None
    manifest: Manifest

    @property
    def folder(self) -> Path:
        """Its folder on this disk (inspecting a version needs one)."""
        if self.path is None:
            raise ConveyorError(f"{self.name} {self.version}: no folder on this disk")
        return self.path


@dataclass(frozen=True)
class FunctionEntry:
    """What is known of one function: in the folder registry, or as the API serves it."""

    name: str
    path: Path | None  # its folder, where it has one on this disk
    spec: FunctionSpec | None = None  # the version that serves (the last good one)
    schemas: FunctionSchemas | None = None  # its input and output schemas, once checked
    pending: FunctionSpec | None = None  # a newer version whose code is being checked
    error: str | None = None  # why the newest version on disk cannot serve
    error_version: str | None = None
    pinned: bool = False  # rolled back to ``spec``: it serves until unpinned or redeployed
    rejected: FunctionSpec | None = None  # the newest version, if its check failed

    @property
    def status(self) -> Literal["ready", "loading", "error"]:
        if self.pending is not None:
            return "loading"
        return "ready" if self.error is None else "error"


def require_serving(entry: FunctionEntry) -> FunctionEntry:
    """``entry`` if it has a version to serve; else why not."""
    if entry.spec is not None:
        return entry
    if entry.pending is not None:
        raise FunctionUnavailableError(
            f"function {entry.name!r} is being loaded (version {entry.pending.version});"
            " retry in a moment"
        )
    raise FunctionUnavailableError(f"function {entry.name!r} has no good version: {entry.error}")


def not_found(name: str) -> FunctionNotFoundError:
    return FunctionNotFoundError(f"no function named {name!r} is deployed")


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
    """Function folders under ``root`` (or, with ``folders``, those named: ``conveyor check
    PATH``), validated against the deployment's queues."""

    def __init__(
        self,
        root: Path,
        queues: Mapping[str, QueueSettings],
        folders: Mapping[str, Path] | None = None,
    ) -> None:
        self.root = root
        self.queues = queues
        self.folders = folders
        self._entries: dict[str, FunctionEntry] = {}
        self._digests = DigestCache()
        self._lock = threading.Lock()

    def entries(self) -> list[FunctionEntry]:
        return sorted(self._entries.values(), key=lambda e: e.name)

    def find(self, name: str) -> FunctionEntry | None:
        return self._entries.get(name)

    def entry(self, name: str) -> FunctionEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise not_found(name) from None

    def serving(self, name: str) -> FunctionEntry:
        """The entry of ``name`` if it has a version to serve."""
        return require_serving(self.entry(name))

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
        resolved: FunctionSpec | None = None,
    ) -> Change | None:
        """``spec``'s code checked out: it serves now (as ``resolved``, its environment
        resolved, if given). None if a newer scan superseded it."""
        with self._lock:
            old = self._entries.get(spec.name)
            if old is None or old.pending != spec:
                return None
            serving = resolved or spec
            self._entries = {
                **self._entries,
                spec.name: FunctionEntry(spec.name, spec.path, serving, schemas),
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
            entry = replace(
                old, pending=None, error=error, error_version=spec.version, rejected=spec
            )
            self._entries = {**self._entries, spec.name: entry}
        change = Change(spec.name, "failed", spec.version, error)
        _log(change)
        return change

    def retry_pipelines(self) -> list[FunctionSpec]:
        """The pipelines whose check failed, to be checked again (a function they name
        may be deployed now): each is ``loading`` until its check ends."""
        retried = []
        with self._lock:
            entries = dict(self._entries)
            for name, entry in entries.items():
                spec = entry.rejected
                if spec is None or not spec.manifest.is_pipeline or entry.pending is not None:
                    continue
                if spec.version != entry.error_version:
                    continue
                entries[name] = replace(entry, pending=spec, rejected=None)
                retried.append(spec)
            self._entries = entries
        return retried

    def refresh(self) -> list[Change]:
        """Rescan and accept every new version on its manifest alone (no code is checked)."""
        scan = self.scan()
        accepted = [self.accept(spec) for spec in scan.candidates]
        return scan.changes + [change for change in accepted if change is not None]

    def _folders(self) -> dict[str, Path]:
        if self.folders is not None:
            return {name: path for name, path in self.folders.items() if path.is_dir()}
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
                scan.changes.append(Change(name, "updated", version))  # it is the newest again
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
        entries[name] = replace(old, pending=spec, error=None, error_version=None, rejected=None)
        scan.candidates.append(spec)


def _log(change: Change) -> None:
    if change.error is None:
        log.info(f"function_{change.action}", function=change.name, version=change.version)
    else:
        log.warning(
            "function_failed", function=change.name, version=change.version, error=change.error
        )
