"""The file store: write a file as a stream, read a range of it, remove it, sweep.

Synchronous: a worker calls it as it is; the API from threads (``asyncio.to_thread``), a
piece at a time, so neither ever holds a file. A :class:`FileWriter` counts and hashes
what passes, keeps the first bytes to tell the format by, and refuses a file past
``[files] max_bytes``; nothing is readable before :meth:`FileWriter.finish`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis

from conveyor.errors import FileTooLargeError, KeyLimitError
from conveyor.files import refs
from conveyor.files.blobs import Blobs, RedisBlobs, S3Blobs
from conveyor.files.db import FileIndex, FileMeta
from conveyor.files.refs import HEAD, new_id, sniff
from conveyor.log import get_logger
from conveyor.settings import FilesSettings

log = get_logger(__name__)
WRITE_LEASE = 3600.0  # seconds an unfinished write may take before the sweeper removes it
COPY = 1024 * 1024


class FileStore:
    """Files on one Redis (their records) and their bytes where ``[files] store`` says."""

    def __init__(self, settings: FilesSettings, client: redis.Redis) -> None:
        self.settings = settings
        self.index = FileIndex(client)
        self._redis = RedisBlobs(client)
        self._s3: S3Blobs | None = None

    def blobs(self, where: str) -> Blobs:
        if where == "s3":
            if self._s3 is None:
                self._s3 = S3Blobs(self.settings)
            return self._s3
        return self._redis

    def writer(
        self,
        *,
        kind: str,
        owner: str | None,
        ttl: float,
        filename: str = "",
        content_type: str = "",
        budget: Budget | None = None,
    ) -> FileWriter:
        return FileWriter(self, kind, owner or "", ttl, filename, content_type, budget)

    def put_path(
        self, path: Path, *, kind: str, owner: str | None, ttl: float, content_type: str = ""
    ) -> FileMeta:
        """Store a local file (a handler's output), a MiB at a time."""
        writer = self.writer(
            kind=kind, owner=owner, ttl=ttl, filename=path.name, content_type=content_type
        )
        with path.open("rb") as source:
            return writer.fill(iter(lambda: source.read(COPY), b""))

    def put_bytes(
        self,
        data: bytes,
        *,
        kind: str,
        owner: str | None,
        ttl: float,
        filename: str = "",
        content_type: str = "",
        budget: Budget | None = None,
    ) -> FileMeta:
        writer = self.writer(
            kind=kind,
            owner=owner,
            ttl=ttl,
            filename=filename,
            content_type=content_type,
            budget=budget,
        )
        return writer.fill([data])

    def get(self, file_id: str) -> FileMeta | None:
        return self.index.get(file_id)

    def read(
        self, meta: FileMeta, start: int = 0, end: int | None = None, *, ahead: int = 4
    ) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive; None: the end) in pieces of about a MiB,
        ``ahead`` of them read at once (1 for a reader that may be slow)."""
        stop = meta.size if end is None else end
        return self.blobs(meta.store).read(meta.id, start, stop, ahead)

    def small(self, meta: FileMeta) -> bytes:
        """A small file whole (a data URI's bytes): callers check its size first."""
        return b"".join(self.read(meta))

    def heads(self, file_ids: list[str]) -> dict[str, tuple[dict[str, str], list[bytes]]]:
        """What :meth:`fetch` reads first, for many files in one round trip (a batch's)."""
        return self._redis.records_and_heads(file_ids) if file_ids else {}

    def fetch(
        self,
        file_id: str,
        place: Callable[[FileMeta], Path],
        read: tuple[dict[str, str], list[bytes]] | None = None,
    ) -> tuple[FileMeta, Path] | None:
        """Write a file to the path ``place`` gives for it: its record and that path
        (None: no such file). A file in Redis of up to four chunks takes one round trip,
        record included (none when :meth:`heads` read it already: ``read``)."""
        raw, head = read if read is not None else self.heads([file_id])[file_id]
        meta = FileMeta.ready(raw)
        if meta is None:
            return None
        done = sum(map(len, head)) if meta.store == "redis" else 0
        path = place(meta)
        with path.open("wb") as target:
            if done:
                target.writelines(head)
            for piece in self.read(meta, done):
                target.write(piece)
        return meta, path

    def remove(self, file_id: str) -> bool:
        """Remove a file (its record first: no one reads it after): whether it was one."""
        where = self.index.remove(file_id)
        if where == "s3":
            self.blobs("s3").delete(file_id)
        return bool(where)

    def sweep(self, now: float | None = None) -> int:
        """Remove files past their expiry that nothing holds: how many."""
        removed = 0
        for file_id in self.index.due(time.time() if now is None else now):
            try:
                self.remove(file_id)
                removed += 1
            except Exception as exc:  # an S3 outage: the record goes next round
                log.warning("file_sweep_failed", file=file_id, error=str(exc))
        if removed:
            log.info("files_swept", removed=removed)
        return removed


@dataclass
class Budget:
    """What one request may store, counted before each piece is written: its files' bytes
    in all (``left`` of ``[files] max_request_bytes``) and, for a key with
    ``max_file_bytes``, what the key holds (``usage``, its counter; ``limits``, the key's
    KeyLimits). ``made``: the files it stored, removed at once if the request is refused."""

    left: int
    usage: str = ""
    limits: Any = None
    made: list[str] = field(default_factory=list)

    @property
    def quota(self) -> int | None:
        return getattr(self.limits, "max_file_bytes", None)

    def spend(self, store: FileStore, file_id: str, size: int) -> None:
        """Count ``size`` more bytes of ``file_id``: FileTooLargeError past the request's
        bound, KeyLimitError past the key's quota (nothing counted then)."""
        if size > self.left:
            raise FileTooLargeError(
                f"the request's files are over {store.settings.max_request_bytes} bytes in all"
                " ([files] max_request_bytes): send fewer or smaller files"
            )
        if self.usage:
            quota = self.quota
            held = store.index.reserve(file_id, self.usage, size, quota)
            if held is not None:
                raise KeyLimitError("max_file_bytes", QUOTA_RETRY, self.limits)
        self.left -= size


QUOTA_RETRY = 60  # seconds: a key's files free room as they expire or are deleted


class FileWriter:
    """One file being written: ``write`` pieces, then ``finish`` (or ``abort``)."""

    def __init__(  # noqa: PLR0917
        self,
        store: FileStore,
        kind: str,
        owner: str,
        ttl: float,
        filename: str,
        content_type: str,
        budget: Budget | None = None,
    ) -> None:
        self.store = store
        self.budget = budget
        self.id = new_id()
        self.ttl = ttl
        self.limit = store.settings.max_bytes
        self.size = 0
        self.head = b""
        self.hash = hashlib.sha256()
        self.blobs = store.blobs(store.settings.store)
        now = time.time()
        self.meta = FileMeta(
            id=self.id,
            size=0,
            sha256="",
            content_type=content_type or "application/octet-stream",
            filename=refs.safe_filename(filename),
            owner=owner,
            kind=kind,
            store=self.blobs.name,
            created_at=now,
            expires_at=now + WRITE_LEASE,
        )
        store.index.put(self.meta, "writing")
        if budget is not None:
            budget.made.append(self.id)
        self.sink = self.blobs.writer(self.id)
        self.aborted = False
        self.finished = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.abort()
            raise FileTooLargeError(
                f"the file is larger than {self.limit} bytes ([files] max_bytes)"
            )
        if self.budget is not None:
            try:
                self.budget.spend(self.store, self.id, len(data))
            except BaseException:
                self.abort()
                raise
        if len(self.head) < HEAD:
            self.head += data[: HEAD - len(self.head)]
        self.hash.update(data)
        self.sink.write(data)

    def fill(self, pieces: Iterable[bytes]) -> FileMeta:
        """Write every piece and finish; on any error, nothing is left."""
        try:
            for piece in pieces:
                self.write(piece)
        except BaseException:
            self.abort()
            raise
        return self.finish()

    def finish(self) -> FileMeta:
        self.sink.close()
        now = time.time()
        meta = replace(
            self.meta,
            size=self.size,
            sha256=self.hash.hexdigest(),
            sniffed=sniff(self.head) or "",
            created_at=now,
            expires_at=now + self.ttl,
        )
        self.store.index.put(meta, "ready")
        self.finished = True
        return meta

    def abort(self) -> None:
        """Drop what was written (nothing, once finished: remove the file instead)."""
        if self.aborted or self.finished:
            return
        self.aborted = True
        try:
            self.sink.abort()
        finally:
            self.store.index.remove(self.id)
