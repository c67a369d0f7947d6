"""A function folder's version: a digest of every file in it, names and contents.

The same files make up a version's bundle (:mod:`conveyor.store.bundle`), so a bundle
unpacked anywhere has the digest it was stored under.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

VERSION_LENGTH = 12


def folder_files(folder: Path) -> list[Path]:
    """The files that make a version, sorted: hidden files and compiled Python left out."""
    found = []
    for item in folder.rglob("*"):
        rel = item.relative_to(folder).parts
        if any(part.startswith(".") or part == "__pycache__" for part in rel):
            continue
        if item.is_file() and item.suffix not in (".pyc", ".pyo"):
            found.append(item)
    return sorted(found)


def folder_digest(folder: Path, file_digest: Callable[[Path], bytes] | None = None) -> str:
    """The version of ``folder`` as it is now."""
    file_digest = file_digest or _file_digest
    digest = hashlib.sha256()
    for file in folder_files(folder):
        digest.update(str(file.relative_to(folder)).encode() + b"\0")
        digest.update(file_digest(file))
    return digest.hexdigest()[:VERSION_LENGTH]


def _file_digest(file: Path) -> bytes:
    return hashlib.sha256(file.read_bytes()).digest()


class DigestCache:
    """Folder digests, rehashing only files whose size or mtime changed."""

    def __init__(self) -> None:
        self._files: dict[Path, tuple[int, int, bytes]] = {}
        self._lock = threading.Lock()

    def folder(self, path: Path) -> str:
        return folder_digest(path, self._file)

    def _file(self, file: Path) -> bytes:
        stat = file.stat()
        with self._lock:
            cached = self._files.get(file)
        if cached and cached[:2] == (stat.st_size, stat.st_mtime_ns):
            return cached[2]
        digest = _file_digest(file)
        with self._lock:
            self._files[file] = (stat.st_size, stat.st_mtime_ns, digest)
        return digest
