"""The versions a worker machine has unpacked from the function store.

``<cache_dir>/<name>-<version>/<name>/`` holds one version's folder (the inner folder has
the function's name, so messages and tracebacks read ``iris/handler.py``). A version is
fetched and unpacked once per machine: worker processes take a file lock per version, the
first fetches, the others find it there. A folder is complete or absent: it is unpacked
beside its place and renamed into it, after its digest is checked against the version.
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
from conveyor.store.bundle import unpack

# A worker unpacks what an API accepted under its own limit; this bounds it all the same.
MOST_BYTES = 512 * 1024 * 1024


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
                staging.rename(self.folder(name, version).parent)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return self.folder(name, version)

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
            shutil.rmtree(self.folder(name, version).parent, ignore_errors=True)
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
