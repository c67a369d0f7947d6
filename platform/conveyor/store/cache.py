"""The versions a worker machine has unpacked from the function store.

``<cache_dir>/<name>-<version>/<name>/`` holds one version's folder (the inner folder has
the function's name, so messages and tracebacks read ``iris/handler.py``). A version is
fetched and unpacked once per machine: worker processes take a file lock per version, the
first fetches, the others find it there. A folder is complete or absent: it is unpacked
beside its place and renamed into it, after its digest is checked against the version.

Every worker process runs user code, and any of them could write into another function's
folder. So a folder is made read-only once unpacked (no ``__pycache__`` is written into it
either), and a process checks a version's files against its digest before it first imports
it (:meth:`VersionCache.verified`): a folder that changed is unpacked again from the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from conveyor.errors import BundleError
from conveyor.functions.digest import folder_digest
from conveyor.log import get_logger
from conveyor.store.bundle import unpack

log = get_logger(__name__)

# A worker unpacks what an API accepted under its own limit; this bounds it all the same.
MOST_BYTES = 4 * 1024 * 1024 * 1024  # (a bundle in the bucket may have [files] max_bytes)


class VersionCache:
    """Unpacked versions under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, name: str, version: str) -> Path:
        return self.root / f"{name}-{version}" / name

    def get(self, name: str, version: str) -> Path | None:
        folder = self.folder(name, version)
        return folder if folder.is_dir() else None

    def install(self, name: str, version: str, fetch: Callable[[], bytes | None]) -> Path | None:
        """The version's folder, unpacked from ``fetch()`` if this machine lacks it; None
        when ``fetch()`` has nothing (the store does not hold the version)."""
        found = self.get(name, version)
        if found is not None:
            return found
        with self._locked(name, version):
            found = self.get(name, version)
            if found is not None:
                return found
            data = fetch()
            if data is None:
                return None
            staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.root))
            try:
                unpacked = unpack(data, staging / name, MOST_BYTES)
                if (actual := folder_digest(unpacked)) != version:
                    raise BundleError(
                        f"the store's bundle of {name} {version} unpacks to version {actual}"
                    )
                _read_only(staging)
                staging.rename(self.folder(name, version).parent)
            finally:
                _remove(staging)
        return self.folder(name, version)

    def verified(self, name: str, version: str, fetch: Callable[[], bytes | None]) -> Path | None:
        """:meth:`install`, and the folder's files checked against the version (what this
        process is about to import): one that differs is logged, removed and unpacked
        again. None when the store does not hold the version."""
        folder = self.get(name, version)
        if folder is None:  # unpacked now: its digest was checked as it was
            return self.install(name, version, fetch)
        for pycache in folder.rglob("__pycache__"):  # compiled code the digest cannot see
            _remove(pycache)
        if (actual := folder_digest(folder)) == version:
            return folder
        log.warning("cached_version_changed", function=name, version=version, found=actual)
        self.remove(name, version)
        folder = self.install(name, version, fetch)
        if folder is not None and folder_digest(folder) != version:
            raise BundleError(f"{name} {version}: its unpacked files keep changing ({folder})")
        return folder

    def versions(self) -> list[tuple[str, str]]:
        """(name, version) of every version unpacked here."""
        if not self.root.is_dir():
            return []
        found = []
        for item in self.root.iterdir():
            name, _, version = item.name.rpartition("-")
            if item.is_dir() and name and not item.name.startswith("."):
                found.append((name, version))
        return found

    def remove(self, name: str, version: str) -> None:
        """Forget a version (the store collected it: nothing will run it again)."""
        with self._locked(name, version):
            _remove(self.folder(name, version).parent)
        with contextlib.suppress(FileNotFoundError):
            self._lock_file(name, version).unlink()

    def _lock_file(self, name: str, version: str) -> Path:
        return self.root / f".{name}-{version}.lock"

    @contextlib.contextmanager
    def _locked(self, name: str, version: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_file(name, version), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _read_only(root: Path) -> None:
    """Files 0444 and folders 0555 below ``root`` (``root`` itself stays writable)."""
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        path.chmod(0o555 if path.is_dir() else 0o444)


def _remove(path: Path) -> None:
    """Remove a tree that may be read-only."""
    if not path.exists():
        return
    for folder in [path, *path.rglob("*")]:
        if folder.is_dir() and not folder.is_symlink():
            with contextlib.suppress(OSError):
                folder.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)
