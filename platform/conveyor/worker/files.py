"""A pool child's files: an attempt's file inputs on its disk, its file outputs stored.

The message holds ``conveyor://files/<id>`` where the caller sent a file; before the
handler runs, each is streamed from the file store into a folder of its own (removed when
the attempt ends: :meth:`Attempt.cleanup`) and handed over as a :class:`~conveyor.File`.
A ``Path`` the handler returns, anywhere in its output, is streamed into the store, owned
by the invocation's owner and kept as long as its result; the output holds its reference
and the record lists the files (:meth:`Attempt.listed`).
"""

from __future__ import annotations

import errno
import json
import mimetypes
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pydantic
import redis

from conveyor.db import keyspace
from conveyor.errors import FileInputError
from conveyor.files import refs
from conveyor.files.db import FileMeta
from conveyor.files.store import FileStore
from conveyor.functions.loader import FunctionSchemas, LoadedFunction
from conveyor.handler_types import File
from conveyor.log import get_logger
from conveyor.settings import Settings

log = get_logger(__name__)
MAX_DEPTH = 64
SMALL = 1024 * 1024  # input files up to this go to memory (/dev/shm), unless scratch_dir
MEMORY = Path("/dev/shm")


class WorkerFiles:
    """The file store as one pool child uses it."""

    def __init__(self, settings: Settings, client: Callable[[], redis.Redis]) -> None:
        self.settings = settings
        self._client = client
        self._store: FileStore | None = None
        self._schemas: dict[tuple[str, str, str], FunctionSchemas | None] = {}
        self.prefetched: dict[str, tuple[dict[str, str], list[bytes]]] = {}
        given = settings.worker.scratch_dir
        self.disk = str(given) if given else tempfile.gettempdir()
        # A small file costs more in file-system calls than in bytes: memory takes them
        # eight times faster here (README "Files").
        self.memory = None if given or not MEMORY.is_dir() else str(MEMORY)

    def root(self, size: int) -> str:
        """Where an input file of ``size`` bytes is written."""
        return self.memory if self.memory is not None and size <= SMALL else self.disk

    @property
    def store(self) -> FileStore:
        client = self._client()
        if self._store is None or self._store.index.redis is not client:
            self._store = FileStore(self.settings.files, client)
        return self._store

    def prefetch(self, fn: LoadedFunction, raws: list[Any]) -> None:
        """Read the records and first chunks of every file a batch's inputs refer to, in
        one round trip; each item's :meth:`Attempt.inputs` then writes its own."""
        schemas = self.schemas(fn)
        if schemas is None:
            return
        ids = [
            file_id
            for raw in raws
            for field in refs.file_fields(schemas.input, schemas.defs, raw)
            if (file_id := refs.ref_id(refs.get(raw, field.path))) is not None
        ]
        self.prefetched = self.store.heads(ids)

    def schemas(self, fn: LoadedFunction) -> FunctionSchemas | None:
        """``fn``'s schemas if its input has a file field (None: no file inputs)."""
        key = (fn.name, fn.version, fn.manifest.handler)  # a training's handler is another
        if key not in self._schemas:
            schemas = fn.schemas()
            self._schemas[key] = schemas if schemas.takes_files else None
        return self._schemas[key]


class Attempt:
    """The :class:`~conveyor.runtime.runner.FileBridge` of one invocation's attempt."""

    def __init__(self, files: WorkerFiles, owned_by: str, ttl: float) -> None:
        self.files = files
        self.owned_by = owned_by  # the hash whose "owner" owns the outputs (a record, a job)
        self.ttl = ttl
        self.folders: dict[str, Path] = {}  # by root: this attempt's own folder there
        self.stored: list[dict[str, Any]] = []

    def _may_read(self, meta: FileMeta) -> bool:
        """The API's rule, where the bytes are read: a file is read by the invocations of
        its owner (a pipeline's steps and a map job's items are their caller's), of a
        caller with no key, and by whatever holds it: the invocation, run or map job whose
        caller the API let name it (an admin may name any)."""
        if not meta.owner:
            return True
        client = self.files.store.index.redis
        owner, run = client.hmget(self.owned_by, ["owner", "run"])
        if owner is None or owner == meta.owner:
            return True
        holders = [keyspace.holder(self.owned_by)]
        if run:
            holders.append(keyspace.holder(keyspace.record(str(run))))
        held = client.smismember(keyspace.file_holders(meta.id), holders)
        return any(held)

    def inputs(self, fn: LoadedFunction, raw: Any) -> Any:
        schemas = self.files.schemas(fn)
        if schemas is None:
            return raw
        for field in refs.file_fields(schemas.input, schemas.defs, raw):
            value = refs.get(raw, field.path)
            file_id = refs.ref_id(value)
            if file_id is None:
                raise FileInputError(field.name, f"{value[:80]!r} is not a stored file")
            raw = refs.replace(raw, field.path, self._fetch(field.name, file_id))
        return raw

    def _fetch(self, field: str, file_id: str) -> File:
        read = self.files.prefetched.pop(file_id, None)
        try:
            fetched = self.files.store.fetch(file_id, self._place, read)
        except OSError as exc:
            if self.files.memory is None or exc.errno != errno.ENOSPC:
                raise
            # /dev/shm is full (a container's is 64 MiB): this process writes to disk now
            log.warning("files_memory_full", error=str(exc), scratch=self.files.disk)
            self.files.memory = None
            fetched = self.files.store.fetch(file_id, self._place, read)
        if fetched is None:
            raise FileInputError(field, f"file {file_id} is gone (deleted, or Redis lost it)")
        meta, path = fetched
        if not self._may_read(meta):
            path.unlink(missing_ok=True)
            raise FileInputError(field, f"file {file_id} was made with another key")
        return File.of(
            path,
            content_type=meta.content_type,
            filename=meta.filename or None,
            size=meta.size,
            sha256=meta.sha256,
        )

    def _place(self, meta: FileMeta) -> Path:
        """Where an input file goes: ``<the attempt's folder>/<id>/<its own name>``."""
        root = self.files.root(meta.size)
        folder = self.folders.get(root)
        if folder is None:
            folder = self.folders[root] = Path(tempfile.mkdtemp(prefix="conveyor-", dir=root))
        place = folder / meta.id
        place.mkdir(exist_ok=True)
        # Named safe again here: a record stored before names were made safe may hold any.
        name = refs.safe_filename(meta.filename)
        return place / (name or f"input{refs.extension(meta.content_type)}")

    def outputs(self, output: Any) -> Any:
        dumped = (
            output.model_dump(mode="python") if isinstance(output, pydantic.BaseModel) else output
        )
        if not _has_path(dumped):
            return output  # a model goes back as it was: encoding dumps it in JSON mode
        output = dumped
        owner = cast("str | None", self.files.store.index.redis.hget(self.owned_by, "owner"))
        return self._visit(output, owner, 0)

    def _visit(self, node: Any, owner: str | None, depth: int) -> Any:
        if isinstance(node, Path):
            return refs.ref(self._store(node, owner))
        if depth > MAX_DEPTH:
            return node
        if isinstance(node, (list, tuple)):
            return [self._visit(item, owner, depth + 1) for item in node]
        if isinstance(node, dict):
            return {key: self._visit(item, owner, depth + 1) for key, item in node.items()}
        if isinstance(node, pydantic.BaseModel):
            return self._visit(node.model_dump(mode="python"), owner, depth + 1)
        return node

    def _store(self, path: Path, owner: str | None) -> str:
        declared = path.content_type if isinstance(path, File) else None
        meta = self.files.store.put_path(
            path,
            kind="output",
            owner=owner,
            ttl=self.ttl,
            content_type=declared or mimetypes.guess_type(path.name)[0] or "",
        )
        if not declared and meta.content_type == "application/octet-stream" and meta.sniffed:
            meta = replace(meta, content_type=meta.sniffed)
            self.files.store.index.put(meta, "ready")
        self.stored.append(_listed(meta))
        return meta.id

    def listed(self) -> str:
        """What the record keeps of the files the output holds ('': none)."""
        return json.dumps(self.stored) if self.stored else ""

    def cleanup(self) -> None:
        for folder in self.folders.values():
            shutil.rmtree(folder, ignore_errors=True)
        self.folders.clear()


def _listed(meta: FileMeta) -> dict[str, Any]:
    return {
        "id": meta.id,
        "content_type": meta.content_type,
        "size": meta.size,
        "sha256": meta.sha256,
        "filename": meta.filename,
        "expires_at": meta.expires_at,
    }


def _has_path(node: Any, depth: int = 0) -> bool:
    if isinstance(node, Path):
        return True
    if depth > MAX_DEPTH:
        return False
    if isinstance(node, (list, tuple)):
        return any(_has_path(item, depth + 1) for item in node)
    if isinstance(node, dict):
        return any(_has_path(item, depth + 1) for item in node.values())
    return isinstance(node, pydantic.BaseModel)  # looked into when visited
